package rootfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Flattening an OCI image's layers into one tree, for machine roots made by
// copy or reflink: each layer, lowest first, is applied over what the layers
// below made, the way overlayfs shows them merged:
//
//   - a whiteout (0:0 character device) removes what is there, and is not
//     copied;
//   - an opaque directory empties what is there before its own contents come;
//   - a directory over a directory keeps it, taking the upper one's owner,
//     mode, xattrs and times; anything else replaces what is there (a
//     directory over a file, a file over a directory).
//
// Both trees are reached through descriptors with O_NOFOLLOW (the copier's
// way), so a symlink in a layer never leads the copy elsewhere.

// flattenLayers applies the layers (their trees, lowest first) to the empty
// directory dst and returns the bytes of file data copied.
func flattenLayers(ctx context.Context, layers []string, dst string, opts copyOptions) (int64, error) {
	droot, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: dst, Err: err}
	}
	defer unix.Close(droot)
	c := &copier{ctx: ctx, opts: opts, droot: droot, links: map[inode]string{}, buf: make([]byte, 1<<20)}
	for _, l := range layers {
		if err := applyLayer(c, l); err != nil {
			return c.done, fmt.Errorf("layer %s: %w", filepath.Base(filepath.Dir(l)), err)
		}
	}
	return c.done, nil
}

// applyLayer applies one layer's tree to c's destination.
func applyLayer(c *copier, layer string) error {
	var dirs []int // destination directories matching the walk's
	defer func() {
		for _, fd := range dirs[min(1, len(dirs)):] {
			unix.Close(fd)
		}
	}()
	return walkTree(c.ctx, layer, func(n *node) error {
		if n.rel == "" {
			dirs = append(dirs, c.droot)
			if isOpaque(n.fd) {
				return clearDir(c.droot, "")
			}
			return nil
		}
		fd, err := applyNode(c, dirs[len(dirs)-1], n)
		if fd >= 0 {
			dirs = append(dirs, fd)
		}
		return err
	}, func(n *node) error {
		fd := dirs[len(dirs)-1]
		dirs = dirs[:len(dirs)-1]
		err := layerDirMeta(fd, n)
		if n.rel != "" {
			unix.Close(fd)
		}
		if err != nil {
			return err
		}
		ts := []unix.Timespec{n.st.Atim, n.st.Mtim}
		if n.rel == "" {
			return unix.UtimesNanoAt(fd, ".", ts, 0)
		}
		return unix.UtimesNanoAt(dirs[len(dirs)-1], n.name, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// applyNode applies the layer's node n at pfd/n.name, returning the
// destination directory's descriptor when n is a directory (else -1).
func applyNode(c *copier, pfd int, n *node) (int, error) {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, n.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil && err != unix.ENOENT {
		return -1, &os.PathError{Op: "stat", Path: n.rel, Err: err}
	}
	exists := err == nil
	isDir := exists && st.Mode&unix.S_IFMT == unix.S_IFDIR
	if isWhiteout(&n.st) {
		if exists {
			return -1, removeAt(pfd, n.name, n.rel, isDir)
		}
		return -1, nil
	}
	if !n.isDir() {
		if exists {
			if err := removeAt(pfd, n.name, n.rel, isDir); err != nil {
				return -1, err
			}
		}
		return -1, c.file(pfd, n)
	}
	if exists && !isDir {
		if err := removeAt(pfd, n.name, n.rel, false); err != nil {
			return -1, err
		}
	}
	if !isDir {
		if err := unix.Mkdirat(pfd, n.name, 0o700); err != nil {
			return -1, &os.PathError{Op: "mkdir", Path: n.rel, Err: err}
		}
	}
	fd, err := unix.Openat(pfd, n.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: n.rel, Err: err}
	}
	if isDir && isOpaque(n.fd) {
		if err := clearDir(fd, n.rel); err != nil {
			return fd, err
		}
	}
	return fd, nil
}

// removeAt removes what is at pfd/name, a whole tree for a directory.
func removeAt(pfd int, name, rel string, isDir bool) error {
	if !isDir {
		if err := unix.Unlinkat(pfd, name, 0); err != nil && err != unix.ENOENT {
			return &os.PathError{Op: "unlink", Path: rel, Err: err}
		}
		return nil
	}
	// os.RemoveAll opens the parent by path (the /proc link to pfd, inside
	// the destination) and then works with unlinkat and O_NOFOLLOW.
	if err := os.RemoveAll(fmt.Sprintf("/proc/self/fd/%d/%s", pfd, name)); err != nil {
		return fmt.Errorf("remove %s: %w", rel, err)
	}
	return nil
}

// clearDir removes everything in the directory fd.
func clearDir(fd int, rel string) error {
	names, err := readDirNames(fd)
	if err != nil {
		return &os.PathError{Op: "readdir", Path: rel, Err: err}
	}
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "stat", Path: joinRel(rel, name), Err: err}
		}
		if err := removeAt(fd, name, joinRel(rel, name), st.Mode&unix.S_IFMT == unix.S_IFDIR); err != nil {
			return err
		}
	}
	return nil
}

// layerDirMeta gives the destination directory fd the layer directory n's
// owner, mode and xattrs, dropping xattrs a lower layer's directory had there
// and overlayfs's own (the opaque marker).
func layerDirMeta(fd int, n *node) error {
	if err := unix.Fchown(fd, int(n.st.Uid), int(n.st.Gid)); err != nil {
		return &os.PathError{Op: "chown", Path: n.rel, Err: err}
	}
	if err := unix.Fchmod(fd, n.st.Mode&07777); err != nil {
		return &os.PathError{Op: "chmod", Path: n.rel, Err: err}
	}
	want, err := n.xattrs()
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, x := range want {
		if strings.HasPrefix(x.name, "trusted.overlay.") {
			continue
		}
		keep[x.name] = true
		if err := unix.Fsetxattr(fd, x.name, x.value, 0); err != nil && err != unix.ENOTSUP {
			return &os.PathError{Op: "setxattr " + x.name, Path: n.rel, Err: err}
		}
	}
	have, err := fdXattrs(fd, n.rel)
	if err != nil {
		return err
	}
	for _, x := range have {
		if !keep[x.name] {
			if err := unix.Fremovexattr(fd, x.name); err != nil && err != unix.ENODATA {
				return &os.PathError{Op: "removexattr " + x.name, Path: n.rel, Err: err}
			}
		}
	}
	return nil
}
