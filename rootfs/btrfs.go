package rootfs

import (
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// btrfs subvolume ioctls (linux/btrfs.h), the equivalents of `btrfs subvolume
// create`, `btrfs subvolume snapshot` and `btrfs subvolume delete`.
const (
	btrfsIocSnapCreate   = 0x50009401 // _IOW(0x94, 1, struct btrfs_ioctl_vol_args)
	btrfsIocSubvolCreate = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	btrfsIocSnapDestroy  = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
	btrfsFirstFreeObjID  = 256        // the inode number of every subvolume's root
)

type btrfsVolArgs struct {
	fd   int64
	name [4088]byte
}

func isBtrfs(p string) bool {
	var sfs unix.Statfs_t
	return unix.Statfs(p, &sfs) == nil && sfs.Type == unix.BTRFS_SUPER_MAGIC
}

// isSubvolume reports whether p is the root of a btrfs subvolume.
func isSubvolume(p string) bool {
	var st unix.Stat_t
	return isBtrfs(p) && unix.Lstat(p, &st) == nil && st.Ino == btrfsFirstFreeObjID && st.Mode&unix.S_IFMT == unix.S_IFDIR
}

func btrfsIoctl(dir string, req uintptr, name string, srcFd int) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	var args btrfsVolArgs
	args.fd = int64(srcFd)
	copy(args.name[:len(args.name)-1], name)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.Fd(), req, uintptr(unsafe.Pointer(&args)))
	if errno != 0 {
		return errno
	}
	return nil
}

// createSubvolume makes p a new, empty subvolume. Equivalent to `btrfs
// subvolume create p`.
func createSubvolume(p string) error {
	if err := btrfsIoctl(filepath.Dir(p), btrfsIocSubvolCreate, filepath.Base(p), 0); err != nil {
		return &os.PathError{Op: "btrfs subvolume create", Path: p, Err: err}
	}
	return nil
}

// snapshotSubvolume makes dst a writable snapshot of the subvolume src.
// Equivalent to `btrfs subvolume snapshot src dst`.
func snapshotSubvolume(src, dst string) error {
	s, err := os.Open(src)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := btrfsIoctl(filepath.Dir(dst), btrfsIocSnapCreate, filepath.Base(dst), int(s.Fd())); err != nil {
		return &os.PathError{Op: "btrfs subvolume snapshot " + src, Path: dst, Err: err}
	}
	return nil
}

// destroySubvolumes deletes the subvolumes berth makes under p (p itself, and
// p/rootfs of an image or a machine root) at once by ioctl, which is quicker
// than unlinking every file; what is left, if anything, removeTree unlinks.
func destroySubvolumes(p string) {
	for _, c := range []string{filepath.Join(p, "rootfs"), filepath.Join(p, "root", "rootfs"), p} {
		if isSubvolume(c) {
			_ = btrfsIoctl(filepath.Dir(c), btrfsIocSnapDestroy, filepath.Base(c), 0)
		}
	}
}

// makeTreeDir creates the directory that will hold a tree (an image's or a
// machine's rootfs): a subvolume on btrfs so that roots can be snapshots of it.
func makeTreeDir(p string) error {
	if isBtrfs(filepath.Dir(p)) {
		if err := createSubvolume(p); err == nil {
			return os.Chmod(p, 0o755)
		}
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		return err
	}
	return os.Chmod(p, 0o755)
}
