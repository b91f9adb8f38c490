package rootfs

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/berthd/berth/internal/fsutil"

	"golang.org/x/sys/unix"
)

// Mounted is a stopped machine's root as the machine sees it, for berth to
// reach its files (berth copy-to, copy-from): an overlay root mounted
// detached, never attached anywhere, so it is gone once Close drops its last
// descriptor; a directory root opened as it is. The root lock is held until
// Close, so the machine cannot start meanwhile.
type Mounted struct {
	// Root is the root's "/", a descriptor for openat2 RESOLVE_IN_ROOT.
	Root *os.File
	// Shift is the host ID of the machine's ID 0 on disk: its range's base
	// for a shifted root (Root.Shift), else 0.
	Shift uint32
	lock  *RootLock
}

// MountStopped mounts the stopped machine's root (see Mounted). It fails
// with ErrBusy while the machine runs (or a clone, remove or another copy
// holds its root), with ErrNotFound when it has no root.
func (s *Store) MountStopped(machine string) (*Mounted, error) {
	return s.mountStopped(machine, false)
}

// mountStopped is MountStopped; readOnly mounts an overlay root read-only,
// its upper directory as one more lower layer (nothing is written to it, no
// work directory either; overlayfs honours its whiteouts and opaque
// directories as in the machine's own mount).
func (s *Store) mountStopped(machine string, readOnly bool) (*Mounted, error) {
	lock, err := s.lockRoot(machine, "")
	if err != nil {
		return nil, err
	}
	m := &Mounted{lock: lock}
	r, err := s.Root(machine)
	if err == nil {
		err = m.open(r, readOnly)
	}
	if err != nil {
		lock.Unlock()
		return nil, err
	}
	return m, nil
}

func (m *Mounted) open(r *Root, readOnly bool) error {
	if sh := r.Shift; sh != nil {
		if sh.To != nil && !readOnly {
			return errorf(ErrBusy, "machine %q: its root is midway through a shift of its owners (berth was stopped during it): start the machine once to complete it", r.Machine)
		}
		m.Shift = sh.Base
	}
	if r.Overlay == nil {
		fd, err := unix.Open(r.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("machine %q: its root: %w", r.Machine, &os.PathError{Op: "open", Path: r.Dir, Err: err})
		}
		m.Root = os.NewFile(uintptr(fd), r.Dir)
		return nil
	}
	lower, upper, work, attr := r.Overlay.Lower, r.Overlay.Upper, r.Overlay.Work, 0
	if readOnly {
		lower, upper, work, attr = r.Stack(), "", "", unix.MOUNT_ATTR_RDONLY
	}
	fd, err := mountOverlayDetached(lower, upper, work, attr)
	if err != nil {
		return fmt.Errorf("machine %q: mount its overlay root: %w", r.Machine, err)
	}
	m.Root = os.NewFile(uintptr(fd), r.Path)
	return nil
}

// Close unmounts the root (the detached mount goes with its descriptor) and
// releases the root lock.
func (m *Mounted) Close() error {
	if m == nil {
		return nil
	}
	var err error
	if m.Root != nil {
		err = m.Root.Close()
		m.Root = nil
	}
	m.lock.Unlock()
	return err
}

// mountOverlayDetached is `mount -t overlay overlay -o
// lowerdir=…,upperdir=…,workdir=…` (no upper and work when upper is "") by
// fsopen, fsconfig and fsmount, without the move_mount that would attach
// it: the mount is reachable only through the descriptor returned, and gone
// with the last one. nodev, nosuid and noexec (and attr): berth reads and
// writes files there, nothing more.
func mountOverlayDetached(lowerDirs []string, upper, work string, attr int) (int, error) {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fd)
	set := func(key, value string) error {
		if err := unix.FsconfigSetString(fd, key, value); err != nil {
			return fmt.Errorf("fsconfig %s=%s: %w%s", key, value, err, fsutil.ContextLog(fd))
		}
		return nil
	}
	for i, l := range lowerDirs {
		err := set("lowerdir+", l)
		if i == 0 && errors.Is(err, unix.EINVAL) {
			// Before Linux 6.8: the layers as one option.
			lowers := make([]string, len(lowerDirs))
			for j, l := range lowerDirs {
				lowers[j] = escapeOverlayPath(l)
			}
			err = set("lowerdir", strings.Join(lowers, ":"))
			if err != nil {
				return -1, err
			}
			break
		}
		if err != nil {
			return -1, err
		}
	}
	if upper != "" {
		for _, kv := range [][2]string{{"upperdir", upper}, {"workdir", work}, {"index", "off"}} {
			if err := set(kv[0], kv[1]); err != nil {
				return -1, err
			}
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return -1, fmt.Errorf("fsconfig create: %w%s", err, fsutil.ContextLog(fd))
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC|attr)
	if err != nil {
		return -1, fmt.Errorf("fsmount: %w%s", err, fsutil.ContextLog(fd))
	}
	return mfd, nil
}
