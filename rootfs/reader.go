package rootfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// RootReader is a stopped machine's root opened for reading files out of it,
// as the machine would see them, under the root's lock (so the machine does
// not start meanwhile). An overlay root is mounted for it read-only and
// detached (fsopen, fsmount, never attached anywhere: no other process sees
// it, and the kernel unmounts it when the last file of it is closed); a
// directory root is opened as it is. Every path is resolved inside the root
// (openat2 RESOLVE_IN_ROOT): a symbolic link the guest made never leads to a
// host file.
type RootReader struct {
	m *Mounted
}

// ReadRoot opens the root of machine, which must be stopped, for reading. It
// fails with ErrNotFound when the machine has no root and ErrBusy when it is
// running.
func (s *Store) ReadRoot(machine string) (*RootReader, error) {
	m, err := s.mountStopped(machine, true)
	if err != nil {
		return nil, fmt.Errorf("machine %q: open its root: %w", machine, err)
	}
	return &RootReader{m: m}, nil
}

// Close releases the root: its lock, and the overlay mount once no file
// opened from it remains open.
func (r *RootReader) Close() error {
	return r.m.Close()
}

// resolve is openat2 of rel inside the root: symbolic links are resolved as
// the machine would (never above its root), magic links (/proc/self/…) not
// at all, and a symbolic link at rel itself is refused (O_NOFOLLOW).
func (r *RootReader) resolve(rel string, flags int) (int, error) {
	fd, err := openInRoot(int(r.m.Root.Fd()), strings.TrimLeft(filepath.Clean("/"+rel), "/"), flags|unix.O_NOFOLLOW)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: "/" + strings.TrimLeft(rel, "/"), Err: err}
	}
	return fd, nil
}

// Open opens the regular file at rel (a path inside the machine) for
// reading. Anything else there (a symbolic link, a FIFO, a device) is an
// error, and opening never blocks (O_NONBLOCK).
func (r *RootReader) Open(rel string) (*os.File, error) {
	fd, err := r.resolve(rel, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		if err == nil {
			err = errors.New("not a regular file")
		}
		return nil, &fs.PathError{Op: "open", Path: "/" + strings.TrimLeft(rel, "/"), Err: err}
	}
	return os.NewFile(uintptr(fd), "/"+strings.TrimLeft(rel, "/")), nil
}

// ReadDir returns the names in the directory at rel, at most limit of them
// (a guest can make a directory of millions), sorted as the directory
// returns them. A directory that does not exist is an error matching
// fs.ErrNotExist.
func (r *RootReader) ReadDir(rel string, limit int) ([]string, error) {
	fd, err := r.resolve(rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	d := os.NewFile(uintptr(fd), "/"+strings.TrimLeft(rel, "/"))
	defer d.Close()
	names, err := d.Readdirnames(limit)
	if err != nil && !errors.Is(err, io.EOF) { // EOF: an empty directory
		return nil, err
	}
	return names, nil
}
