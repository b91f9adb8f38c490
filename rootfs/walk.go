package rootfs

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// node is one file of a tree as walkTree sees it. Everything is reached through
// directory file descriptors opened with O_NOFOLLOW, never through a path string,
// so a tree that holds hostile symlinks (a guest's overlay upper, an image made
// from an archive) cannot lead the walk outside of it.
type node struct {
	rel    string // path from the tree's root with '/' separators; "" for the root
	name   string // last element of rel
	st     unix.Stat_t
	parent int // descriptor of the directory holding it; -1 for the root
	fd     int // the directory's own descriptor for directories, else -1
}

func (n *node) isDir() bool { return n.st.Mode&unix.S_IFMT == unix.S_IFDIR }

// procPath names the node for the l*xattr calls, which have no *at form: the
// parent's /proc/self/fd link is followed, the last element is not.
func (n *node) procPath() string {
	if n.parent < 0 {
		return fmt.Sprintf("/proc/self/fd/%d", n.fd)
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", n.parent, n.name)
}

// open opens a regular file of the tree for reading.
func (n *node) open() (*os.File, error) {
	fd, err := unix.Openat(n.parent, n.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: n.rel, Err: err}
	}
	return os.NewFile(uintptr(fd), n.rel), nil
}

// readlink returns a symlink's target.
func (n *node) readlink() (string, error) {
	buf := make([]byte, 256)
	for {
		k, err := unix.Readlinkat(n.parent, n.name, buf)
		if err != nil {
			return "", &os.PathError{Op: "readlink", Path: n.rel, Err: err}
		}
		if k < len(buf) {
			return string(buf[:k]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// xattrs returns the node's extended attributes, sorted by name.
func (n *node) xattrs() ([]xattr, error) {
	if n.fd >= 0 {
		return fdXattrs(n.fd, n.rel)
	}
	return pathXattrs(n.procPath(), n.rel)
}

type xattr struct {
	name  string
	value []byte
}

func fdXattrs(fd int, what string) ([]xattr, error) {
	return readXattrs(what,
		func(b []byte) (int, error) { return unix.Flistxattr(fd, b) },
		func(name string, b []byte) (int, error) { return unix.Fgetxattr(fd, name, b) })
}

func pathXattrs(p, what string) ([]xattr, error) {
	return readXattrs(what,
		func(b []byte) (int, error) { return unix.Llistxattr(p, b) },
		func(name string, b []byte) (int, error) { return unix.Lgetxattr(p, name, b) })
}

func readXattrs(what string, list func([]byte) (int, error), get func(string, []byte) (int, error)) ([]xattr, error) {
	sz, err := list(nil)
	if err == unix.ENOTSUP || sz == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: what, Err: err}
	}
	buf := make([]byte, sz)
	sz, err = list(buf)
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: what, Err: err}
	}
	var out []xattr
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		vsz, err := get(name, nil)
		if err == unix.ENODATA {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "getxattr " + name, Path: what, Err: err}
		}
		val := make([]byte, vsz)
		if vsz > 0 {
			if vsz, err = get(name, val); err != nil {
				return nil, &os.PathError{Op: "getxattr " + name, Path: what, Err: err}
			}
		}
		out = append(out, xattr{name: name, value: val[:vsz]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// walkTree calls pre for every file of the tree at root in a fixed order (names
// sorted bytewise, a directory before its contents) and post for each directory
// after its contents. Neither callback may keep the node or its descriptors.
// Sockets are skipped: they mean nothing in an image.
func walkTree(ctx context.Context, root string, pre, post func(*node) error) error {
	return walkTreeAt(ctx, unix.AT_FDCWD, root, pre, post)
}

// walkTreeAt is walkTree of the directory at root relative to the directory
// descriptor dirfd (a detached mount's, with root ".").
func walkTreeAt(ctx context.Context, dirfd int, root string, pre, post func(*node) error) error {
	fd, err := unix.Openat(dirfd, root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(fd)
	n := &node{parent: -1, fd: fd}
	if err := unix.Fstat(fd, &n.st); err != nil {
		return &os.PathError{Op: "stat", Path: root, Err: err}
	}
	return walkDir(ctx, n, pre, post)
}

func walkDir(ctx context.Context, dir *node, pre, post func(*node) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if pre != nil {
		if err := pre(dir); err != nil {
			return err
		}
	}
	names, err := readDirNames(dir.fd)
	if err != nil {
		return &os.PathError{Op: "readdir", Path: dir.rel, Err: err}
	}
	for _, name := range names {
		c := &node{name: name, rel: joinRel(dir.rel, name), parent: dir.fd, fd: -1}
		if err := unix.Fstatat(dir.fd, name, &c.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "stat", Path: c.rel, Err: err}
		}
		switch c.st.Mode & unix.S_IFMT {
		case unix.S_IFSOCK:
			continue
		case unix.S_IFDIR:
			fd, err := unix.Openat(dir.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return &os.PathError{Op: "open", Path: c.rel, Err: err}
			}
			c.fd = fd
			err = walkDir(ctx, c, pre, post)
			unix.Close(fd)
			if err != nil {
				return err
			}
		default:
			if pre != nil {
				if err := pre(c); err != nil {
					return err
				}
			}
		}
	}
	if post != nil {
		return post(dir)
	}
	return nil
}

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// readDirNames lists a directory through a duplicate of fd (so fd's offset is
// not disturbed), sorted bytewise.
func readDirNames(fd int) ([]string, error) {
	dup, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), ".")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// diskUsage is the space the tree at root takes, counting each inode once, as du
// does.
func diskUsage(ctx context.Context, root string) (int64, error) {
	var total int64
	seen := map[inode]bool{}
	err := walkTree(ctx, root, func(n *node) error {
		if n.st.Nlink > 1 && !n.isDir() {
			k := inode{n.st.Dev, n.st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += n.st.Blocks * 512
		return nil
	}, nil)
	return total, err
}

type inode struct{ dev, ino uint64 }

// removeTree deletes the tree at p without following symlinks in it (os.RemoveAll
// works with *at calls and O_NOFOLLOW), deleting btrfs subvolumes by ioctl first
// where that is quicker.
func removeTree(p string) error {
	destroySubvolumes(p)
	return os.RemoveAll(p)
}
