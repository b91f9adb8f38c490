package safecopy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The paths a person gives, resolved as cp does: SRC is copied itself (a
// symbolic link as a link); DST names what it becomes, or, when DST is an
// existing directory (or ends in /), the directory it goes into under SRC's
// own name; an omitted DST is SRC's path on the other side.

// CopyTo copies the host's src (a file, a link or a directory tree) into the
// machine at dst (an absolute path there; "" is src's own path).
func CopyTo(ctx context.Context, g *Guest, src, dst string, opt Options) (*Summary, error) {
	src, err := filepath.Abs(src)
	if err != nil {
		return nil, err
	}
	if dst == "" {
		dst = src
	}
	slash := strings.HasSuffix(dst, "/")
	if dst, err = GuestPath(g.Name, dst); err != nil {
		return nil, err
	}
	if src == "/" {
		return nil, errors.New("copy-to /: name a directory below /")
	}
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return nil, &os.PathError{Op: "copy-to", Path: src, Err: err}
	}
	srcDir, err := unix.Open(filepath.Dir(src), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Dir(src), Err: err}
	}
	defer unix.Close(srcDir)
	c := &copier{ctx: ctx, g: g, toGuest: true, opt: opt, links: map[fileKey]string{}}
	dstDir, dname, dstPath, err := c.guestTarget(dst, filepath.Base(src), slash)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dstDir)
	if fs := kernelFS(dstDir); fs != "" {
		return nil, fmt.Errorf("%s is on %s, a kernel filesystem: berth writes only to ordinary files", c.where(true, path.Dir(dstPath)), fs)
	}
	c.sum = &Summary{Machine: g.Name, Direction: "to", Source: src, Destination: c.where(true, dstPath), Skipped: []Skip{}}
	return c.run(node{srcDir: srcDir, name: filepath.Base(src), srcPath: src, dstDir: dstDir, dname: dname, dstPath: dstPath, dstRel: dname})
}

// CopyFrom copies the machine's src (an absolute path there) to the host's
// dst ("" is src's own path on the host).
func CopyFrom(ctx context.Context, g *Guest, src, dst string, opt Options) (*Summary, error) {
	src, err := GuestPath(g.Name, src)
	if err != nil {
		return nil, err
	}
	if src == "/" {
		return nil, fmt.Errorf("machine %q: copy-from /: name a directory below /", g.Name)
	}
	if dst == "" {
		dst = src
	}
	slash := strings.HasSuffix(dst, "/")
	if dst, err = filepath.Abs(dst); err != nil {
		return nil, err
	}
	c := &copier{ctx: ctx, g: g, opt: opt, links: map[fileKey]string{}}
	srcDir, err := c.inRoot(path.Dir(src))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.where(true, path.Dir(src)), dirError(err))
	}
	defer unix.Close(srcDir)
	var st unix.Stat_t
	if err := unix.Fstatat(srcDir, path.Base(src), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fmt.Errorf("%s: %w", c.where(true, src), err)
	}
	dstDir, dname, dstPath, err := hostTarget(dst, path.Base(src), slash)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dstDir)
	c.sum = &Summary{Machine: g.Name, Direction: "from", Source: c.where(true, src), Destination: dstPath, Skipped: []Skip{}}
	return c.run(node{srcDir: srcDir, name: path.Base(src), srcPath: src, dstDir: dstDir, dname: dname, dstPath: dstPath, dstRel: dname})
}

// run copies the top entry on a thread of the copy's own.
func (c *copier) run(top node) (*Summary, error) {
	c.dstTop = top.dstDir
	err := onCopyThread(c.g.FSUser, c.g.Offset, func() error { return c.entry(top) })
	if err != nil {
		return c.sum, err
	}
	return c.sum, nil
}

// inRoot opens the directory p inside the machine's root, resolved as the
// guest would (its symbolic links followed, .. stopping at its /), never
// outside it and through no magic link.
func (c *copier) inRoot(p string) (int, error) {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	for {
		fd, err := unix.Openat2(c.g.Root, p, &how)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue // a rename raced the lookup
		}
		return fd, err
	}
}

func dirError(err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return errors.New("no such directory in the machine")
	case errors.Is(err, unix.ENOTDIR):
		return errors.New("not a directory in the machine")
	}
	return err
}

// guestTarget resolves dst in the machine as the place for an entry named
// name: into dst when it is a directory there, else dst itself in its
// parent directory. It returns the directory, the entry's name in it and its
// path.
func (c *copier) guestTarget(dst, name string, slash bool) (int, string, string, error) {
	fd, err := c.inRoot(dst)
	if err == nil {
		return fd, name, path.Join(dst, name), nil
	}
	if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
		return -1, "", "", fmt.Errorf("%s: %w", c.where(true, dst), err)
	}
	if slash || dst == "/" {
		return -1, "", "", fmt.Errorf("%s: %w", c.where(true, dst), dirError(err))
	}
	fd, err = c.inRoot(path.Dir(dst))
	if err != nil {
		return -1, "", "", fmt.Errorf("%s: %w", c.where(true, path.Dir(dst)), dirError(err))
	}
	return fd, path.Base(dst), dst, nil
}

// hostTarget is guestTarget on the host, by the host's own rules.
func hostTarget(dst, name string, slash bool) (int, string, string, error) {
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
		fd, err := unix.Open(dst, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, "", "", &os.PathError{Op: "open", Path: dst, Err: err}
		}
		return fd, name, filepath.Join(dst, name), nil
	} else if slash {
		if err == nil {
			err = unix.ENOTDIR
		}
		return -1, "", "", &os.PathError{Op: "copy-from", Path: dst, Err: err}
	}
	dir := filepath.Dir(dst)
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", "", &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return fd, filepath.Base(dst), dst, nil
}
