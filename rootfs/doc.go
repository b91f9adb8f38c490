// Package rootfs owns images and machine root filesystems: the image store, safe
// import of directories, tar archives and debootstrap, and per-machine persistent
// roots made by the best strategy the filesystem allows.
package rootfs
