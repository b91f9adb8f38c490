package fsutil

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// fsTypes names the filesystems berth meets by their statfs(2) f_type, the
// magic numbers of linux/magic.h.
var fsTypes = map[int64]string{
	0xef53:     "ext4", // ext2, ext3 and ext4 share it
	0x58465342: "xfs",
	0x9123683e: "btrfs",
	0x01021994: "tmpfs",
	0x858458f6: "ramfs",
	0x794c7630: "overlayfs",
	0x6969:     "nfs",
	0x65735546: "fuse",
	0xf2f52010: "f2fs",
	0x2fc12fc1: "zfs",
	0xca451a4e: "bcachefs",
	0x4d44:     "vfat",
	0x2011bab0: "exfat",
	0x5346544e: "ntfs",
	0x73717368: "squashfs",
	0xe0f5e1e2: "erofs",
	0xff534d42: "cifs",
	0xfe534d42: "smb2",
	0x01021997: "9p",
	0x00c36400: "ceph",
	0x9fa0:     "proc",
	0x62656572: "sysfs",
	0x63677270: "cgroup2",
	0x958458f6: "hugetlbfs",
}

// TypeName names a filesystem by its statfs(2) f_type, as `stat -f -c %T`
// does; one berth does not know is "filesystem 0x…", its magic.
func TypeName(magic int64) string {
	// The magic is 32 bits; where f_type is a signed 32-bit word the high
	// ones (cifs) come out negative.
	magic &= 0xffffffff
	if n, ok := fsTypes[magic]; ok {
		return n
	}
	return fmt.Sprintf("filesystem 0x%x", magic)
}

// TypeOf names the filesystem that holds path. Equivalent to
// `stat -f -c %T PATH`.
func TypeOf(path string) (string, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		return "", &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	return TypeName(int64(sfs.Type)), nil
}
