package rootfs

// Copies of a machine's root: berth clone, and the copy a snapshot and its
// restore make (snapshot.go).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/berthd/berth/internal/osimage"
)

// CloneRoot makes dst's root a copy of the stopped machine src's root, by src's
// strategy: for an overlay root only the upper directory (the machine's own
// changes) is copied and the image layer is shared; a btrfs root is snapshotted;
// reflink and copy roots are copied so. It refuses a running src (its lock is
// held) and an existing dst.
func (s *Store) CloneRoot(ctx context.Context, src, dst string) (*Root, error) {
	if err := ValidName(dst); err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	r, lock, err := s.stoppedRoot(src, "clone it")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if err := s.noRoot(dst); err != nil {
		return nil, err
	}
	unlock, err := s.storeLock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	start := time.Now()
	// A shifted root's copy is owned as the original is: its record goes
	// with it, and dst's first start shifts it into dst's range.
	c := Root{Machine: dst, Image: r.Image, Digest: r.Digest, Strategy: r.Strategy, Created: time.Now().UTC(), ClonedFrom: src, Shift: r.Shift, Layers: r.Layers}
	made, err := s.commitRoot(dst, "clone-", c, func(dir string) error { return s.cloneInto(ctx, r, dir) })
	if err != nil {
		return nil, err
	}
	if !made {
		return nil, errorf(ErrExists, "machine %q got a root while it was being cloned", dst)
	}
	slog.Info("rootfs: machine root cloned", "machine", dst, "from", src, "strategy", r.Strategy, "took", time.Since(start).Round(time.Millisecond))
	return s.Root(dst)
}

// stoppedRoot takes the root lock of the stopped machine (refusing, if it
// runs, to do action: "clone it") and reads its root, refusing one midway
// through a shift of its owners.
func (s *Store) stoppedRoot(machine, action string) (*Root, *RootLock, error) {
	lock, err := s.lockRoot(machine, action)
	if err != nil {
		return nil, nil, err
	}
	r, err := s.Root(machine)
	if err == nil && r.Shift != nil && r.Shift.To != nil {
		err = errorf(ErrBusy, "machine %q: its root is midway through a shift of its owners (berth was stopped during it): start the machine once to complete it, then %s", machine, action)
	}
	if err != nil {
		lock.Unlock()
		return nil, nil, err
	}
	return r, lock, nil
}

// noRoot fails unless machine has no root yet (a clone's destination).
func (s *Store) noRoot(machine string) error {
	_, err := s.Root(machine)
	if err == nil {
		return errorf(ErrExists, "machine %q already has a root: pick another name, or remove it first (berth remove --delete-data %s)", machine, machine)
	}
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// cloneInto copies the root r into the work directory dir by its strategy.
// A clone is a new machine: it gets its own machine ID at first boot.
func (s *Store) cloneInto(ctx context.Context, r *Root, dir string) error {
	if err := s.copyRoot(ctx, r, dir); err != nil {
		return err
	}
	if r.Overlay != nil {
		return osimage.ResetMachineID(filepath.Join(dir, "upper"), r.Overlay.Lower)
	}
	tree := filepath.Join(dir, "rootfs")
	if err := osimage.ResetMachineID(tree, nil); err != nil {
		return err
	}
	return ownLikeShift(tree, r.Shift, "etc/machine-id", "var/lib/dbus/machine-id")
}

// copyRoot copies the root r's own trees into the directory dir as they are,
// by its strategy: an overlay root's upper directory (and an empty work
// directory: the image layers are shared), a btrfs root by a subvolume
// snapshot, a reflink or copy root with file clones where the filesystem has
// them. Clones, snapshots and restores are all this copy.
func (s *Store) copyRoot(ctx context.Context, r *Root, dir string) error {
	rep := newReporter(progressFrom(ctx))
	copyDir := func(from, to string, reflink bool) error {
		if err := os.Mkdir(to, 0o755); err != nil {
			return err
		}
		rep.start("copy", 0)
		n, err := copyTree(ctx, from, to, copyOptions{reflink: reflink, progress: rep.update})
		rep.finish(n)
		return err
	}
	tree := filepath.Join(dir, "rootfs")
	switch r.Strategy {
	case StrategyOverlay:
		if err := copyDir(r.Overlay.Upper, filepath.Join(dir, "upper"), s.probe().reflink); err != nil {
			return err
		}
		return os.Mkdir(filepath.Join(dir, "work"), 0o700)
	case StrategyBtrfs:
		return snapshotSubvolume(r.Dir, tree)
	}
	return copyDir(r.Dir, tree, r.Strategy == StrategyReflink || s.probe().reflink)
}
