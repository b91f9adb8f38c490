// Package hold is the locks a running machine holds in berth's state
// directory: its root's exclusive lock and, for an ephemeral machine, its
// image content's shared in-use lock. Both are flocks on files whose place
// the store's layout fixes, so a machine's supervisor takes them without
// opening the image store (package rootfs, which takes the same locks before
// it removes, clones or changes a root, and checks them before it drops an
// image's content). The kernel drops a lock when its holder ends, however it
// ends; the descriptors are O_CLOEXEC, so no guest inherits one.
package hold

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berthd/berth/internal/errdefs"
	"golang.org/x/sys/unix"
)

// LockFile is the name of a machine root's lock file in its directory.
const LockFile = ".lock"

// MachineDir is machine's root directory in the state directory:
// STATE/machines/NAME (the store's layout, which package rootfs uses too).
func MachineDir(stateDir, machine string) string {
	return filepath.Join(stateDir, "machines", machine)
}

// ContentDir is the content directory of image digest "sha256:HEX":
// STATE/images/sha256/HEX.
func ContentDir(stateDir, digest string) string {
	return filepath.Join(stateDir, "images", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// RootLockPath is machine's root lock: STATE/machines/NAME/.lock.
func RootLockPath(stateDir, machine string) string {
	return filepath.Join(MachineDir(stateDir, machine), LockFile)
}

// InUsePath is the in-use lock of an image's content:
// STATE/images/sha256/HEX/in-use.lock.
func InUsePath(stateDir, digest string) string {
	return filepath.Join(ContentDir(stateDir, digest), "in-use.lock")
}

// Root is an exclusive hold on a machine's root.
type Root struct{ f *os.File }

// LockRoot takes machine's root lock in stateDir without waiting. When the
// lock file is missing, missing says why (the machine has no root: an error),
// or returns nil for a root made before lock files existed, whose lock file
// is then made. It fails with an error matching errdefs.ErrBusy that names
// the holder when another process holds the lock; action, when not empty,
// is what was refused ("remove it").
func LockRoot(stateDir, machine, action string, missing func() error) (*Root, error) {
	p := RootLockPath(stateDir, machine)
	for {
		f, err := os.OpenFile(p, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if os.IsNotExist(err) {
				if merr := missing(); merr != nil {
					return nil, merr
				}
				f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
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
				return nil, errdefs.Errorf(errdefs.ErrBusy, "machine %q is running: its root is held by %s", machine, holder)
			}
			return nil, errdefs.Errorf(errdefs.ErrBusy, "machine %q is running (its root is held by %s): stop it before you %s", machine, holder, action)
		}
		// The root may have been removed (renamed away) between the open and
		// the flock: then the lock is on a file no one else will look at.
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) == nil && unix.Stat(p, &b) == nil && a.Ino == b.Ino && a.Dev == b.Dev {
			return &Root{f: f}, nil
		}
		f.Close()
		if _, err := os.Stat(filepath.Dir(p)); err != nil {
			return nil, errdefs.Errorf(errdefs.ErrNotFound, "machine %q has no root", machine)
		}
	}
}

// Unlock releases the lock.
func (l *Root) Unlock() error {
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

// UseImage share-locks the content of image digest in stateDir for a running
// ephemeral machine: the store neither removes nor prunes the content while
// the returned file is open. digest is "sha256:" and 64 lowercase hex digits.
func UseImage(stateDir, digest string) (*os.File, error) {
	if !ValidDigest(digest) {
		return nil, errdefs.Errorf(errdefs.ErrInvalid, "image digest %q", digest)
	}
	f, err := os.OpenFile(InUsePath(stateDir, digest), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image %s: mark in use: %w", digest, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
		f.Close()
		return nil, fmt.Errorf("image %s: mark in use: %w", digest, err)
	}
	return f, nil
}

// ValidDigest reports whether d names an image's content: "sha256:" and 64
// lowercase hex digits.
func ValidDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	return ok && len(h) == 64 && strings.Trim(h, "0123456789abcdef") == ""
}

// ImageInUse reports whether a running ephemeral machine holds digest's
// content (UseImage).
func ImageInUse(stateDir, digest string) bool {
	f, err := os.OpenFile(InUsePath(stateDir, digest), os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	return err == unix.EWOULDBLOCK
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
