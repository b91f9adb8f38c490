package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/berthd/berth/internal/fsutil"

	"golang.org/x/sys/unix"
)

// Snapshots of machine roots. A snapshot is a copy of a stopped machine's own
// trees made the way its root was (copyRoot), kept apart from the root so
// that removing or recreating the root leaves it:
//
//	STATE/snapshots/NAME/.lock        flock: shared while a snapshot is read
//	                                  (restore, clone, export), exclusive while one is removed
//	STATE/snapshots/NAME/SNAP/        snapshot.json, and upper/ + work/ (overlay)
//	                                  or rootfs/ (btrfs: a subvolume snapshot; reflink, copy)
//
// An overlay snapshot is the upper directory only (O(the machine's changes));
// the image content and layers it sits on are kept by the store while a
// snapshot names them (digestUsed, usedLayers), as for a root.

const snapshotMetaFile = "snapshot.json"

// Snapshot is one snapshot of a machine's root.
type Snapshot struct {
	Machine  string    `json:"machine"`
	Name     string    `json:"name"`
	Created  time.Time `json:"created"`
	Strategy Strategy  `json:"strategy"`
	// Image, Digest, Layers and Shift are the root's when the snapshot was
	// taken: a restore puts them back with the data.
	Image  string   `json:"image"`
	Digest string   `json:"digest"`
	Layers []string `json:"layers,omitempty"`
	Shift  *Shift   `json:"shift,omitempty"`
	// Size is the disk space of the snapshot's own tree when it was taken
	// (an overlay root's upper directory; on btrfs and reflink filesystems
	// the blocks are shared with the root until either changes).
	Size int64 `json:"size"`
	// Took is how long taking it took.
	Took time.Duration `json:"took"`

	// Path is STATE/snapshots/NAME/SNAP.
	Path string `json:"-"`
}

func (s *Store) snapshotsDir() string { return filepath.Join(s.dir, "snapshots") }

func (s *Store) machineSnapshots(machine string) string {
	return filepath.Join(s.snapshotsDir(), machine)
}

// snapshotLock takes the machine's snapshot lock (see the layout above).
func (s *Store) snapshotLock(machine string, exclusive bool) (func(), error) {
	dir := s.machineSnapshots(machine)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("machine %q: snapshots: %w", machine, err)
	}
	unlock, err := fsutil.Lock(filepath.Join(dir, lockFile), exclusive)
	if err != nil {
		return nil, fmt.Errorf("machine %q: snapshots: %w", machine, err)
	}
	return unlock, nil
}

// DefaultSnapshotName is the name of a snapshot taken at t when none is given:
// its UTC time, 20261202-063012.
func DefaultSnapshotName(t time.Time) string { return t.UTC().Format("20060102-150405") }

// asRoot is the snapshot seen as a root, for copyRoot and the export.
func (s *Store) asRoot(sn *Snapshot) *Root {
	r := &Root{Machine: sn.Machine, Image: sn.Image, Digest: sn.Digest, Strategy: sn.Strategy, Layers: sn.Layers, Shift: sn.Shift, Path: sn.Path}
	if sn.Strategy == StrategyOverlay {
		r.Overlay = &Overlay{Lower: s.overlayLowers(sn.Digest, sn.Layers), Upper: filepath.Join(sn.Path, "upper"), Work: filepath.Join(sn.Path, "work")}
	} else {
		r.Dir = filepath.Join(sn.Path, "rootfs")
	}
	return r
}

// CreateSnapshot takes a snapshot named snap (DefaultSnapshotName when "") of
// the stopped machine's root. It refuses a running machine (its root lock is
// held), a root midway through a shift of its owners, and a name taken.
// Equivalent to `btrfs subvolume snapshot` of a btrfs root; an overlay root's
// upper directory is copied (cloned file by file where the filesystem can).
func (s *Store) CreateSnapshot(ctx context.Context, machine, snap string) (*Snapshot, error) {
	start := time.Now()
	if snap == "" {
		snap = DefaultSnapshotName(start)
	}
	if err := ValidName(snap); err != nil {
		return nil, fmt.Errorf("machine %q: snapshot name: %w", machine, err)
	}
	r, lock, err := s.stoppedRoot(machine, "snapshot it")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	unlock, err := s.snapshotLock(machine, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	dst := filepath.Join(s.machineSnapshots(machine), snap)
	if _, err := os.Lstat(dst); err == nil {
		return nil, errorf(ErrExists, "machine %q already has a snapshot %q: pick another name, or remove it first (berth snapshot remove %s %s --yes)", machine, snap, machine, snap)
	}
	wd, err := newWorkDir(s.tmpMachines(), "snapshot-"+machine+"-")
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", machine, err)
	}
	defer wd.discard()
	if err := os.Chmod(wd.path, 0o700); err != nil {
		return nil, err
	}
	if err := s.copyRoot(ctx, r, wd.path); err != nil {
		return nil, fmt.Errorf("machine %q: snapshot %q (%s): %w", machine, snap, r.Strategy, err)
	}
	sn := &Snapshot{Machine: machine, Name: snap, Created: start.UTC(), Strategy: r.Strategy, Image: r.Image, Digest: r.Digest, Layers: r.Layers, Shift: r.Shift}
	sn.Path = wd.path
	if sn.Size, err = s.asRoot(sn).Usage(ctx); err != nil {
		return nil, fmt.Errorf("machine %q: snapshot %q: %w", machine, snap, err)
	}
	sn.Took = time.Since(start)
	if err := writeJSON(filepath.Join(wd.path, snapshotMetaFile), sn); err != nil {
		return nil, fmt.Errorf("machine %q: snapshot %q: %w", machine, snap, err)
	}
	if r.Strategy != StrategyBtrfs {
		if err := syncTree(wd.path); err != nil {
			return nil, fmt.Errorf("machine %q: snapshot %q: %w", machine, snap, err)
		}
	}
	err = unix.Renameat2(unix.AT_FDCWD, wd.path, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if err == unix.EEXIST || err == unix.ENOTEMPTY {
		return nil, errorf(ErrExists, "machine %q got a snapshot %q while this one was taken", machine, snap)
	}
	if err != nil {
		return nil, fmt.Errorf("machine %q: snapshot %q: %w", machine, snap, &os.PathError{Op: "rename", Path: dst, Err: err})
	}
	syncDir(filepath.Dir(dst))
	sn.Path = dst
	slog.Info("rootfs: snapshot taken", "machine", machine, "snapshot", snap, "strategy", r.Strategy, "size", sn.Size, "took", sn.Took.Round(time.Microsecond))
	return sn, nil
}

// Snapshot returns the machine's snapshot snap, or an error matching
// ErrNotFound.
func (s *Store) Snapshot(machine, snap string) (*Snapshot, error) {
	if err := ValidName(machine); err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	if err := ValidName(snap); err != nil {
		return nil, fmt.Errorf("machine %q: snapshot name: %w", machine, err)
	}
	p := filepath.Join(s.machineSnapshots(machine), snap)
	var sn Snapshot
	if err := readJSON(filepath.Join(p, snapshotMetaFile), &sn); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errorf(ErrNotFound, "machine %q has no snapshot %q (berth snapshot list %s)", machine, snap, machine)
		}
		return nil, fmt.Errorf("machine %q: snapshot %q: %w", machine, snap, err)
	}
	if _, err := ParseStrategy(string(sn.Strategy)); err != nil || sn.Strategy == StrategyAuto {
		return nil, fmt.Errorf("machine %q: %s names an unknown strategy %q", machine, filepath.Join(p, snapshotMetaFile), sn.Strategy)
	}
	sn.Machine, sn.Name, sn.Path = machine, snap, p
	return &sn, nil
}

// Snapshots lists the machine's snapshots ("" for every machine's), oldest
// first. An unreadable one is skipped with a warning.
func (s *Store) Snapshots(machine string) ([]Snapshot, error) { return s.snapshots(machine, false) }

// snapshots is Snapshots; strict fails on an unreadable snapshot instead (the
// garbage collection must not guess what it sits on).
func (s *Store) snapshots(machine string, strict bool) ([]Snapshot, error) {
	machines := []string{machine}
	if machine == "" {
		ents, err := os.ReadDir(s.snapshotsDir())
		if err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("snapshots: %w", err)
		}
		machines = machines[:0]
		for _, e := range ents {
			if e.IsDir() && ValidName(e.Name()) == nil {
				machines = append(machines, e.Name())
			}
		}
	} else if err := ValidName(machine); err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	var out []Snapshot
	for _, m := range machines {
		ents, err := os.ReadDir(s.machineSnapshots(m))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("machine %q: snapshots: %w", m, err)
		}
		for _, e := range ents {
			if !e.IsDir() || ValidName(e.Name()) != nil {
				continue
			}
			sn, err := s.Snapshot(m, e.Name())
			if err != nil {
				if strict && !errors.Is(err, ErrNotFound) {
					return nil, err
				}
				if !errors.Is(err, ErrNotFound) {
					slog.Warn("rootfs: skipping unreadable snapshot", "machine", m, "snapshot", e.Name(), "err", err)
				}
				continue
			}
			out = append(out, *sn)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Machine != out[j].Machine {
			return out[i].Machine < out[j].Machine
		}
		return out[i].Created.Before(out[j].Created)
	})
	return out, nil
}

// RemoveSnapshot deletes the machine's snapshot snap and returns the bytes it
// took. The image content and layers only it kept go at the next prune.
func (s *Store) RemoveSnapshot(machine, snap string) (int64, error) {
	if _, err := s.Snapshot(machine, snap); err != nil {
		return 0, err // before the lock, which makes the machine's snapshot directory
	}
	unlock, err := s.snapshotLock(machine, true)
	if err != nil {
		return 0, err
	}
	defer unlock()
	sn, err := s.Snapshot(machine, snap)
	if err != nil {
		return 0, err // removed meanwhile
	}
	if err := s.discardDir(sn.Path, "remove-snapshot-"+machine+"-"); err != nil {
		return 0, fmt.Errorf("machine %q: remove snapshot %q: %w", machine, snap, err)
	}
	_ = os.Remove(s.machineSnapshots(machine)) // only when empty; the lock file keeps it otherwise
	slog.Info("rootfs: snapshot removed", "machine", machine, "snapshot", snap, "freed", sn.Size)
	return sn.Size, nil
}

// RestoreSnapshot makes the stopped machine's root the snapshot snap again:
// its trees are replaced by a copy of the snapshot's (the snapshot stays), and
// its record takes the snapshot's image content, layers and owner shift. What
// is not in the root stays: the machine's name and UUID (its machine ID), its
// address leases, its UID range. The root's current data is lost: the caller
// asks first. A running machine is refused; a machine without a root (removed,
// or recreated) gets one from the snapshot.
func (s *Store) RestoreSnapshot(ctx context.Context, machine, snap string) (*Root, error) {
	start := time.Now()
	sn, release, err := s.readSnapshot(machine, snap)
	if err != nil {
		return nil, err
	}
	defer release()
	rec := Root{Machine: machine, Image: sn.Image, Digest: sn.Digest, Strategy: sn.Strategy, Layers: sn.Layers, Shift: sn.Shift, Created: time.Now().UTC()}
	lock, err := s.lockRoot(machine, "restore a snapshot")
	if errors.Is(err, ErrNotFound) {
		made, err := s.commitRoot(machine, "restore-", rec, func(dir string) error { return s.copyRoot(ctx, s.asRoot(sn), dir) })
		if err != nil {
			return nil, err
		}
		if !made {
			return nil, errorf(ErrExists, "machine %q got a root while snapshot %q was restored: restore again", machine, snap)
		}
		slog.Info("rootfs: snapshot restored as a new root", "machine", machine, "snapshot", snap, "took", time.Since(start).Round(time.Microsecond))
		return s.Root(machine)
	}
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	cur, err := s.Root(machine)
	if err != nil {
		return nil, err
	}
	rec.Created, rec.ClonedFrom = cur.Created, cur.ClonedFrom
	wd, err := newWorkDir(s.tmpMachines(), "restore-"+machine+"-")
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", machine, err)
	}
	defer wd.discard()
	if err := s.copyRoot(ctx, s.asRoot(sn), wd.path); err != nil {
		return nil, fmt.Errorf("machine %q: restore snapshot %q: %w", machine, snap, err)
	}
	if sn.Strategy != StrategyBtrfs {
		if err := syncTree(wd.path); err != nil {
			return nil, fmt.Errorf("machine %q: restore snapshot %q: %w", machine, snap, err)
		}
	}
	// Each tree trades places with the current one in one rename (the
	// machine directory itself stays: its lock file is held), and the old
	// trees go with the work directory. A strategy that changed (the root
	// was recreated since) leaves the old kind's trees there too.
	for _, t := range []string{"upper", "work", "rootfs"} {
		from, to := filepath.Join(wd.path, t), filepath.Join(cur.Path, t)
		_, ferr := os.Lstat(from)
		_, terr := os.Lstat(to)
		switch {
		case ferr == nil && terr == nil:
			err = unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_EXCHANGE)
		case ferr == nil:
			err = unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
		case terr == nil:
			err = unix.Renameat2(unix.AT_FDCWD, to, unix.AT_FDCWD, from, unix.RENAME_NOREPLACE)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("machine %q: restore snapshot %q: %w", machine, snap, &os.PathError{Op: "rename", Path: to, Err: err})
		}
	}
	if err := writeJSON(filepath.Join(cur.Path, rootMetaFile), rec); err != nil {
		return nil, fmt.Errorf("machine %q: restore snapshot %q: %w", machine, snap, err)
	}
	syncDir(cur.Path)
	slog.Info("rootfs: snapshot restored", "machine", machine, "snapshot", snap, "strategy", sn.Strategy, "took", time.Since(start).Round(time.Microsecond))
	return s.Root(machine)
}

// readSnapshot reads the machine's snapshot snap for a copy of it (a restore,
// a clone, an export), holding until release the snapshot lock (it cannot be
// removed meanwhile) and the store lock, shared (the image content it sits
// on, checked to be there, cannot go either).
func (s *Store) readSnapshot(machine, snap string) (sn *Snapshot, release func(), err error) {
	unlockSnap, err := s.snapshotLock(machine, false)
	if err != nil {
		return nil, nil, err
	}
	if sn, err = s.Snapshot(machine, snap); err != nil {
		unlockSnap()
		return nil, nil, err
	}
	unlock, err := s.storeLock(false)
	if err != nil {
		unlockSnap()
		return nil, nil, err
	}
	release = func() { unlock(); unlockSnap() }
	if err := s.snapshotBase(sn); err != nil {
		release()
		return nil, nil, err
	}
	return sn, release, nil
}

// snapshotBase checks that the image content and layers an overlay snapshot
// sits on are still stored.
func (s *Store) snapshotBase(sn *Snapshot) error {
	if sn.Strategy != StrategyOverlay {
		return nil
	}
	for _, l := range s.overlayLowers(sn.Digest, sn.Layers) {
		if _, err := os.Stat(l); err != nil {
			return fmt.Errorf("machine %q: snapshot %q: the image content it sits on is gone (%s): %w", sn.Machine, sn.Name, sn.Digest, err)
		}
	}
	return nil
}

// CloneSnapshot makes dst's root a copy of src's snapshot snap, as CloneRoot
// copies a root: src may be running (a snapshot does not change).
func (s *Store) CloneSnapshot(ctx context.Context, src, snap, dst string) (*Root, error) {
	if err := ValidName(dst); err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	if err := s.noRoot(dst); err != nil {
		return nil, err
	}
	sn, release, err := s.readSnapshot(src, snap)
	if err != nil {
		return nil, err
	}
	defer release()
	start := time.Now()
	c := Root{Machine: dst, Image: sn.Image, Digest: sn.Digest, Strategy: sn.Strategy, Created: time.Now().UTC(), ClonedFrom: src, Shift: sn.Shift, Layers: sn.Layers}
	made, err := s.commitRoot(dst, "clone-", c, func(dir string) error { return s.cloneInto(ctx, s.asRoot(sn), dir) })
	if err != nil {
		return nil, err
	}
	if !made {
		return nil, errorf(ErrExists, "machine %q got a root while it was being cloned", dst)
	}
	slog.Info("rootfs: machine root cloned from a snapshot", "machine", dst, "from", src, "snapshot", snap, "strategy", sn.Strategy, "took", time.Since(start).Round(time.Millisecond))
	return s.Root(dst)
}

// ExportSnapshot writes the machine's snapshot snap as a tar archive of the
// tree the machine would see (an overlay snapshot merged with its image
// layers, by a read-only overlay mount that is never attached anywhere),
// compressed as asked, with the machine's own owners (a shifted root's
// unshifted): what berth image import takes as an image.
func (s *Store) ExportSnapshot(ctx context.Context, machine, snap string, w io.Writer, c Compression) error {
	sn, release, err := s.readSnapshot(machine, snap)
	if err != nil {
		return err
	}
	defer release()
	r := s.asRoot(sn)
	dirfd, root := unix.AT_FDCWD, r.Dir
	if r.Overlay != nil {
		fd, err := mountOverlayDetached(r.Stack(), "", "", unix.MOUNT_ATTR_RDONLY)
		if err != nil {
			return fmt.Errorf("machine %q: export snapshot %q: mount it: %w", machine, snap, err)
		}
		defer unix.Close(fd)
		dirfd, root = fd, "."
	}
	zw, err := compressWriter(w, c)
	if err != nil {
		return err
	}
	rep := newReporter(progressFrom(ctx))
	x := newExporter(zw, rep, false)
	if sn.Shift != nil {
		x.shift = sn.Shift.Base
	}
	x.rep.start("export", 0)
	if err := walkTreeAt(ctx, dirfd, root, x.entry, nil); err != nil {
		return fmt.Errorf("machine %q: export snapshot %q: %w", machine, snap, err)
	}
	if err := x.tw.Close(); err != nil {
		return fmt.Errorf("machine %q: export snapshot %q: %w", machine, snap, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("machine %q: export snapshot %q: %w", machine, snap, err)
	}
	x.rep.finish(x.done)
	return nil
}

// snapshotUsers is the image content and layers the snapshots sit on, for
// the store's garbage collection.
func (s *Store) snapshotUsers() (digests, layers map[string]bool, err error) {
	sns, err := s.snapshots("", true)
	if err != nil {
		return nil, nil, err
	}
	digests, layers = map[string]bool{}, map[string]bool{}
	for _, sn := range sns {
		digests[sn.Digest] = true
		for _, id := range sn.Layers {
			layers[id] = true
		}
	}
	return digests, layers, nil
}
