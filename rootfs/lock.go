package rootfs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const lockFile = ".lock"

// RootLock is an exclusive hold on a machine's root: the machine's supervisor
// holds one for the machine's whole life, and remove and clone take one to be
// sure the machine is not running. It is an flock, so the kernel drops it when
// the holder dies; the descriptor is O_CLOEXEC, so the guest never inherits it.
type RootLock struct {
	f       *os.File
	machine string
}

// LockRoot takes the machine's root lock without waiting. It fails with an error
// matching ErrBusy, naming the holder's PID, when another process (a running
// machine's supervisor, or a remove or clone in progress) holds it, and with
// ErrNotFound when the machine has no root.
func (s *Store) LockRoot(machine string) (*RootLock, error) {
	return s.lockRoot(machine, "")
}

// lockRoot is LockRoot with the refused action named in the error ("remove it").
func (s *Store) lockRoot(machine, action string) (*RootLock, error) {
	if err := ValidName(machine); err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	p := filepath.Join(s.machineDir(machine), lockFile)
	for {
		f, err := os.OpenFile(p, os.O_RDWR|unix.O_NOFOLLOW, 0)
		if err != nil {
			if os.IsNotExist(err) {
				if _, rerr := s.Root(machine); rerr != nil {
					return nil, rerr
				}
				// A root made before lock files existed, or one whose lock
				// file was deleted by hand: make it.
				f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
			}
			if err != nil {
				return nil, fmt.Errorf("machine %q: lock root: %w", machine, err)
			}
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			var st unix.Stat_t
			_ = unix.Fstat(int(f.Fd()), &st)
			f.Close()
			if err != unix.EWOULDBLOCK {
				return nil, fmt.Errorf("machine %q: lock root: %w", machine, err)
			}
			holder := describeHolder(st.Dev, st.Ino)
			if action == "" {
				return nil, errorf(ErrBusy, "machine %q is running: its root is held by %s", machine, holder)
			}
			return nil, errorf(ErrBusy, "machine %q is running (its root is held by %s): stop it before you %s", machine, holder, action)
		}
		// The root may have been removed (renamed away) between the open and
		// the flock: then the lock is on a file no one else will look at.
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) == nil && unix.Stat(p, &b) == nil && a.Ino == b.Ino && a.Dev == b.Dev {
			return &RootLock{f: f, machine: machine}, nil
		}
		f.Close()
		if _, err := os.Stat(s.machineDir(machine)); err != nil {
			return nil, errorf(ErrNotFound, "machine %q has no root", machine)
		}
	}
}

// Unlock releases the lock.
func (l *RootLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	// Unlocked before it is closed: a process forked meanwhile by another
	// goroutine (a supervisor being started) holds a copy of the descriptor
	// until its exec, and with it the lock, which close alone would leave to
	// that copy: the machine's own supervisor would then find its root held.
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	err := l.f.Close()
	l.f = nil
	return err
}

// describeHolder names the process holding an flock on dev:ino, from
// /proc/locks ("process 1234 (berth-supervisor web)"), or "another process".
func describeHolder(dev, ino uint64) string {
	pid := lockHolder(dev, ino)
	if pid <= 0 {
		return "another process"
	}
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	name := strings.TrimSpace(strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " "))
	if len(name) > 60 {
		name = name[:60] + "…"
	}
	if name == "" {
		return fmt.Sprintf("process %d", pid)
	}
	return fmt.Sprintf("process %d (%s)", pid, name)
}

// lockHolder finds the PID of an flock holder of dev:ino in /proc/locks, whose
// lines read "1: FLOCK  ADVISORY  WRITE 1234 fe:01:56789 0 EOF".
func lockHolder(dev, ino uint64) int {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 6 || fl[1] == "->" || fl[1] != "FLOCK" {
			continue
		}
		if fl[5] == want {
			pid, _ := strconv.Atoi(fl[4])
			return pid
		}
	}
	return 0
}
