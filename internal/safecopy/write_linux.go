package safecopy

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// WriteFile writes data as the file p in the machine (an absolute path
// there), owned by the machine's uid:gid with mode, replacing a file there:
// the files: of a definition, written before its first boot. Missing parent
// directories are made (0755, the machine's root); every step is resolved
// inside the root as the guest would resolve it, so a symbolic link in the
// image leads only to another place in the machine, never to the host. The
// file lands under a temporary name and is renamed into place once complete.
func WriteFile(ctx context.Context, g *Guest, p string, data []byte, uid, gid uint32, mode uint32) error {
	p, err := GuestPath(g.Name, p)
	if err != nil {
		return err
	}
	if p == "/" {
		return fmt.Errorf("machine %q: / is a directory: name a file", g.Name)
	}
	c := &copier{ctx: ctx, g: g, toGuest: true}
	return onCopyThread(g.FSUser, g.Offset, func() error {
		dir, err := c.mkdirAll(path.Dir(p))
		if err != nil {
			return err
		}
		defer unix.Close(dir)
		if fs := kernelFS(dir); fs != "" {
			return fmt.Errorf("%s is on %s, a kernel filesystem: berth writes only to ordinary files", c.where(true, path.Dir(p)), fs)
		}
		name := path.Base(p)
		var st unix.Stat_t
		if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fmt.Errorf("%s is a directory in the machine", c.where(true, p))
		}
		tmp, fd, err := createTemp(dir, name)
		if err != nil {
			return fmt.Errorf("%s: %w", c.where(true, p), err)
		}
		ok := false
		defer func() {
			unix.Close(fd)
			if !ok {
				_ = unix.Unlinkat(dir, tmp, 0)
			}
		}()
		for b := data; len(b) > 0; {
			n, err := unix.Write(fd, b)
			if err != nil {
				return fmt.Errorf("%s: %w", c.where(true, p), err)
			}
			b = b[n:]
		}
		hu, _ := g.hostToGuest(uid)
		hg, _ := g.hostToGuest(gid)
		if err := unix.Fchown(fd, int(hu), int(hg)); err != nil {
			return fmt.Errorf("%s: owner %d:%d: %w", c.where(true, p), uid, gid, err)
		}
		// After the owner: chown clears set-ID bits.
		if err := unix.Fchmod(fd, mode&0o7777); err != nil {
			return fmt.Errorf("%s: mode %04o: %w", c.where(true, p), mode, err)
		}
		if err := unix.Fsync(fd); err != nil {
			return fmt.Errorf("%s: %w", c.where(true, p), err)
		}
		// renameat replaces whatever name holds, a symbolic link included,
		// and never follows one.
		if err := unix.Renameat(dir, tmp, dir, name); err != nil {
			return fmt.Errorf("%s: %w", c.where(true, p), err)
		}
		ok = true
		return nil
	})
}

// mkdirAll opens the directory p in the machine, making what is missing of
// it one level at a time, each resolved in the root.
func (c *copier) mkdirAll(p string) (int, error) {
	fd, err := c.inRoot(p)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		if err != nil {
			err = fmt.Errorf("%s: %w", c.where(true, p), dirError(err))
		}
		return fd, err
	}
	parent, err := c.mkdirAll(path.Dir(p))
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	name := path.Base(p)
	if strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return -1, fmt.Errorf("%s: not a directory name", c.where(true, p))
	}
	if err := unix.Mkdirat(parent, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("%s: %w", c.where(true, p), err)
	}
	// Opened again through the root: what is there now may be a link the
	// guest swapped in, which resolves inside the machine.
	fd, err = c.inRoot(p)
	if errors.Is(err, unix.ENOENT) {
		return -1, fmt.Errorf("%s: a symbolic link to a directory the machine does not have", c.where(true, p))
	}
	if err != nil {
		return -1, fmt.Errorf("%s: %w", c.where(true, p), dirError(err))
	}
	return fd, nil
}
