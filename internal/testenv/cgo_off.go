//go:build !cgo

package testenv

const cgoBuild = false
