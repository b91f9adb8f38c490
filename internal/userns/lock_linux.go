package userns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/berthd/berth/internal/errdefs"
	"golang.org/x/sys/unix"
)

// NspawnLockDir is where systemd-nspawn -U keeps one lock file per range it
// runs a container in (make_lock_file in nspawn.c: an open file description
// write lock, held for the container's life, the file unlinked at release).
// berth holds the same lock for each running machine's range, so that an
// nspawn -U never picks a range a berth machine runs in, nor berth one of
// nspawn's.
var NspawnLockDir = "/run/systemd/nspawn-uid"

// RangeLock is a held lock on a range.
type RangeLock struct {
	f    *os.File
	path string
}

// LockRange takes the lock on the range at base, or fails with an error
// matching ErrConflict when another process (a systemd-nspawn, another
// berth) holds it.
func LockRange(base uint32) (*RangeLock, error) {
	if err := os.MkdirAll(NspawnLockDir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(NspawnLockDir, strconv.FormatUint(uint64(base), 10))
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return nil, err
		}
		lk := unix.Flock_t{Type: unix.F_WRLCK}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			f.Close()
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
				return nil, fmt.Errorf("the UIDs %d-%d are in use by another container (a systemd-nspawn -U holds %s): %w",
					base, base+Size-1, path, errdefs.ErrConflict)
			}
			return nil, &os.PathError{Op: "lock", Path: path, Err: err}
		}
		// The holder before may have unlinked the file between this open
		// and the lock: then the lock is on a file nobody else sees.
		var held, now unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &now) == nil && held.Ino == now.Ino && held.Dev == now.Dev {
			return &RangeLock{f: f, path: path}, nil
		}
		f.Close()
	}
}

// Release unlinks the lock file while it still holds the lock, as nspawn
// does, then drops the lock.
func (l *RangeLock) Release() {
	if l == nil {
		return
	}
	os.Remove(l.path)
	l.f.Close()
}

// lockedByOther says whether another process holds the lock on the range at
// base, without making a lock file.
func lockedByOther(base uint32) bool {
	fd, err := unix.Open(filepath.Join(NspawnLockDir, strconv.FormatUint(uint64(base), 10)), unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		return false
	}
	return lk.Type != unix.F_UNLCK
}
