//go:build cgo

package testenv

// cgoBuild is true in a binary built with cgo.
const cgoBuild = true
