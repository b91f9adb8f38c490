package fsutil

import (
	"os"

	"golang.org/x/sys/unix"
)

// Lock takes an flock on the file at path, creating the file (mode 0600) when
// it is missing, and waits as long as another holder keeps it: exclusive, or
// shared when exclusive is false. Equivalent to `flock [--shared] PATH`.
//
// Each call opens its own file description, so goroutines of one process
// exclude each other as separate processes do. unlock unlocks and closes it
// (unlocking first: a child another goroutine forked meanwhile holds a copy of
// the descriptor until its exec, and close alone would leave the lock to that
// copy); the kernel drops the lock too when the holder dies, and the
// descriptor is close-on-exec, so no program a child runs inherits it. Errors name the path and the
// operation (open, flock).
func Lock(path string, exclusive bool) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		// A signal that interrupts the wait does not end it.
		err = unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, &os.PathError{Op: "flock", Path: path, Err: err}
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
