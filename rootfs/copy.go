package rootfs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
)

type copyOptions struct {
	// reflink asks for copy-on-write clones of file data (FICLONE), falling back
	// to a copy for a file the filesystem will not clone.
	reflink  bool
	progress func(done int64)
}

// copyTree copies the contents and the root's metadata of the tree at src into
// the existing, empty directory dst, keeping owners, modes, setuid bits, xattrs
// (overlayfs whiteouts and opaque markers included), hard links, device nodes,
// fifos and times. It returns the bytes of file data copied.
//
// The source may be hostile (a stopped guest's overlay upper directory): it is
// walked through descriptors with O_NOFOLLOW, and the copy is made through
// descriptors of the directories it creates, so no symlink in either tree is
// ever followed.
func copyTree(ctx context.Context, src, dst string, opts copyOptions) (int64, error) {
	droot, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: dst, Err: err}
	}
	defer unix.Close(droot)
	c := &copier{ctx: ctx, opts: opts, droot: droot, links: map[inode]string{}, buf: make([]byte, 1<<20)}
	// dirs is the stack of destination directories matching the walk's.
	var dirs []int
	defer func() {
		for _, fd := range dirs[min(1, len(dirs)):] {
			unix.Close(fd)
		}
	}()
	err = walkTree(ctx, src, func(n *node) error {
		if n.rel == "" {
			dirs = append(dirs, droot)
			return nil
		}
		pfd := dirs[len(dirs)-1]
		if n.isDir() {
			if err := unix.Mkdirat(pfd, n.name, 0o700); err != nil {
				return &os.PathError{Op: "mkdir", Path: n.rel, Err: err}
			}
			fd, err := unix.Openat(pfd, n.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return &os.PathError{Op: "open", Path: n.rel, Err: err}
			}
			dirs = append(dirs, fd)
			return nil
		}
		return c.file(pfd, n)
	}, func(n *node) error {
		fd := dirs[len(dirs)-1]
		dirs = dirs[:len(dirs)-1]
		err := c.dirMeta(fd, n)
		if n.rel != "" {
			unix.Close(fd)
		}
		if err != nil {
			return err
		}
		if n.rel == "" {
			return unix.UtimesNanoAt(fd, ".", []unix.Timespec{n.st.Atim, n.st.Mtim}, 0)
		}
		return unix.UtimesNanoAt(dirs[len(dirs)-1], n.name, []unix.Timespec{n.st.Atim, n.st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
	})
	return c.done, err
}

type copier struct {
	ctx     context.Context
	opts    copyOptions
	droot   int
	links   map[inode]string // first copy of each multiply linked inode
	done    int64
	buf     []byte
	noClone bool
}

func (c *copier) file(pfd int, n *node) error {
	st := &n.st
	if st.Nlink > 1 {
		k := inode{st.Dev, st.Ino}
		if first, ok := c.links[k]; ok {
			// Every directory on first's path is one this copy made, so the
			// lookup meets no symlink.
			dir, name := splitRel(first)
			tfd, err := resolveInRoot(c.droot, dir)
			if err != nil {
				return &os.PathError{Op: "link", Path: n.rel, Err: err}
			}
			defer unix.Close(tfd)
			if err := unix.Linkat(tfd, name, pfd, n.name, 0); err != nil {
				return &os.PathError{Op: "link", Path: n.rel, Err: err}
			}
			return nil
		}
		c.links[k] = n.rel
	}
	mode := st.Mode & 07777
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		in, err := n.open()
		if err != nil {
			return err
		}
		defer in.Close()
		fd, err := unix.Openat(pfd, n.name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return &os.PathError{Op: "create", Path: n.rel, Err: err}
		}
		out := os.NewFile(uintptr(fd), n.rel)
		defer out.Close()
		if err := c.data(out, in, n); err != nil {
			return err
		}
		if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
			return &os.PathError{Op: "chown", Path: n.rel, Err: err}
		}
		if err := unix.Fchmod(fd, mode); err != nil {
			return &os.PathError{Op: "chmod", Path: n.rel, Err: err}
		}
		if err := c.xattrs(n, func(name string, v []byte) error { return unix.Fsetxattr(fd, name, v, 0) }); err != nil {
			return err
		}
	case unix.S_IFLNK:
		t, err := n.readlink()
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(t, pfd, n.name); err != nil {
			return &os.PathError{Op: "symlink", Path: n.rel, Err: err}
		}
		if err := c.nodeMeta(pfd, n, false); err != nil {
			return err
		}
	default: // devices (overlayfs whiteouts are 0:0 character devices) and fifos
		if err := unix.Mknodat(pfd, n.name, st.Mode&unix.S_IFMT|mode, int(st.Rdev)); err != nil {
			return &os.PathError{Op: "mknod", Path: n.rel, Err: err}
		}
		if err := c.nodeMeta(pfd, n, true); err != nil {
			return err
		}
	}
	if err := unix.UtimesNanoAt(pfd, n.name, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimes", Path: n.rel, Err: err}
	}
	return nil
}

// data copies a regular file's content: a reflink when asked and possible, else
// copy_file_range (io.Copy between files uses it), which shares or copies
// blocks in the kernel.
func (c *copier) data(out, in *os.File, n *node) error {
	if c.opts.reflink && !c.noClone {
		err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
		if err == nil {
			c.advance(n.st.Size)
			return nil
		}
		if err != unix.EOPNOTSUPP && err != unix.EXDEV && err != unix.EINVAL && err != unix.ENOTTY {
			return &os.PathError{Op: "reflink", Path: n.rel, Err: err}
		}
		slog.Debug("rootfs: reflink refused; copying data", "path", n.rel, "err", err)
		c.noClone = err != unix.EINVAL // EINVAL is per file (e.g. unaligned); the rest per filesystem
	}
	var total int64
	for {
		k, err := io.CopyN(out, in, 64<<20)
		total += k
		c.advance(k)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("copy %s: %w", n.rel, err)
		}
		if err := c.ctx.Err(); err != nil {
			return err
		}
	}
}

func (c *copier) advance(k int64) {
	c.done += k
	if c.opts.progress != nil {
		c.opts.progress(c.done)
	}
}

// nodeMeta sets owner, mode (not on symlinks) and xattrs of pfd/name made from n.
func (c *copier) nodeMeta(pfd int, n *node, chmod bool) error {
	if err := unix.Fchownat(pfd, n.name, int(n.st.Uid), int(n.st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "chown", Path: n.rel, Err: err}
	}
	if chmod {
		// Just made by mknod, so not a symlink; mknod's mode was cut by the umask.
		if err := unix.Fchmodat(pfd, n.name, n.st.Mode&07777, 0); err != nil {
			return &os.PathError{Op: "chmod", Path: n.rel, Err: err}
		}
	}
	p := fmt.Sprintf("/proc/self/fd/%d/%s", pfd, n.name)
	return c.xattrs(n, func(name string, v []byte) error { return unix.Lsetxattr(p, name, v, 0) })
}

func (c *copier) dirMeta(fd int, n *node) error {
	if err := unix.Fchown(fd, int(n.st.Uid), int(n.st.Gid)); err != nil {
		return &os.PathError{Op: "chown", Path: n.rel, Err: err}
	}
	if err := unix.Fchmod(fd, n.st.Mode&07777); err != nil {
		return &os.PathError{Op: "chmod", Path: n.rel, Err: err}
	}
	return c.xattrs(n, func(name string, v []byte) error { return unix.Fsetxattr(fd, name, v, 0) })
}

// xattrs copies n's xattrs with set (after chown, which clears
// security.capability).
func (c *copier) xattrs(n *node, set func(string, []byte) error) error {
	xs, err := n.xattrs()
	if err != nil {
		return err
	}
	for _, x := range xs {
		if err := set(x.name, x.value); err != nil {
			if err == unix.ENOTSUP {
				slog.Warn("rootfs: destination filesystem refuses an xattr; it is dropped", "path", n.rel, "xattr", x.name)
				continue
			}
			return &os.PathError{Op: "setxattr " + x.name, Path: n.rel, Err: err}
		}
	}
	return nil
}
