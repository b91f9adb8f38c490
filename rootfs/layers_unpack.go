package rootfs

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// makeLayerTree makes the directory a layer is unpacked into, wd/tree, in
// block groups of its own (spreadInodes). ext4 starts its search for them at
// a hash of the new directory's name: were every tree made as "tree", every
// layer would go to the same groups, where the layers of a store removed a
// moment ago (a test's, a benchmark's) have just left their inodes, not to
// be reused yet. So it is made under a random name, then renamed, which
// moves no inode.
func makeLayerTree(wd *workDir) (string, error) {
	spreadInodes(int(wd.f.Fd()))
	tree := filepath.Join(wd.path, layerTreeDir)
	tmp := tree + "-" + strconv.FormatUint(rand.Uint64(), 36)
	if err := makeTreeDir(tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, tree); err != nil {
		return "", err
	}
	return tree, nil
}

// fsTopdirFL is FS_TOPDIR_FL of linux/fs.h, which x/sys/unix lacks.
const fsTopdirFL = 0x00020000

// spreadInodes marks the directory fd as the top of a directory hierarchy
// (ext4's FS_TOPDIR_FL, `chattr +T`), so that the kernel places each
// directory made in it, and what that then holds, in block groups of their
// own rather than next to the directory's (ext4's Orlov allocator).
//
// A layer's tree is made in its work directory, which lies beside every
// other work directory of the store, and of the whole /var, in the block
// groups where files come and go. Without a journal, ext4 does not reuse an
// inode deleted in the last minute (five while its inode table block is not
// written back) and looks at each free one in the group in turn to tell: after
// large deletions nearby (a prune, another tree removed, a test suite's
// temporary files) every file created there costs a scan of thousands of
// inodes, and unpacking a layer of thousands of files takes several times
// longer. Filesystems other than ext4 (and ext2, ext3) lack the flag or
// ignore it; failing to set it changes nothing but where the inodes go.
func spreadInodes(fd int) {
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsTopdirFL != 0 {
		return
	}
	_ = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, flags|fsTopdirFL)
}

