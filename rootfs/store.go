package rootfs

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/internal/rundir"
	"golang.org/x/sys/unix"
)

// Error classes, checked with errors.Is: berth's one vocabulary (package
// errdefs). Every error the package returns that a person can cause wraps one
// of them and names the image, machine or file.
var (
	ErrNotFound    = errdefs.ErrNotFound
	ErrExists      = errdefs.ErrExists
	ErrInvalid     = errdefs.ErrInvalid
	ErrBusy        = errdefs.ErrBusy
	ErrUnsupported = errdefs.ErrUnsupported
)

// Store is the image store and the machine roots under one state directory:
//
//	STATE/images/.lock             store lock (flock): shared while a root is being made
//	                               from an image, exclusive while images are removed
//	STATE/images/.tmp/             work directories of imports in progress
//	STATE/images/sha256/HEX/       one immutable image: rootfs/ and image.json, or
//	                               an OCI image's image.json alone (HEX: the manifest's)
//	STATE/images/layers/sha256/HEX/ one OCI image layer (HEX: its diff ID), shared
//	                               by the images that have it: layer.json and tree/
//	STATE/images/names/NAME.json   a name → digest reference
//	STATE/machines/.tmp/           roots being made, cloned or deleted
//	STATE/machines/NAME/           one machine root: root.json, .lock, and rootfs/
//	                               (btrfs, reflink, copy) or upper/ + work/ (overlay)
//	STATE/snapshots/NAME/SNAP/     one snapshot of a machine root (snapshot.go)
//
// Everything becomes visible by one rename from a .tmp directory, so a crash at
// any moment leaves either the old state or the new one, plus a work directory
// that the next Open removes. A Store is safe for concurrent use by goroutines and
// by several processes.
type Store struct {
	dir      string // STATE
	images   string // STATE/images
	machines string // STATE/machines

	probeOnce sync.Once
	caps      fsCaps
}

// Open opens (creating it when missing) the store under stateDir and removes the
// work directories that imports, clones and removals killed midway left behind.
func Open(stateDir string) (*Store, error) {
	if stateDir == "" {
		return nil, fmt.Errorf("state dir: %w: empty path", ErrInvalid)
	}
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w", stateDir, err)
	}
	s := &Store{dir: abs, images: filepath.Join(abs, "images"), machines: filepath.Join(abs, "machines")}
	for _, d := range []string{s.images, s.tmpImages(), filepath.Join(s.images, "sha256"), s.layersDir(), filepath.Join(s.images, "names"), s.machines, s.tmpMachines()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("state dir %s: %w", abs, err)
		}
	}
	// The store holds whole operating systems with setuid binaries and device
	// nodes: only root may walk into it.
	_ = os.Chmod(s.images, 0o700)
	_ = os.Chmod(s.machines, 0o700)
	s.cleanTemp()
	return s, nil
}

// Dir is the state directory the store lives in.
func (s *Store) Dir() string { return s.dir }

func (s *Store) tmpImages() string   { return filepath.Join(s.images, ".tmp") }
func (s *Store) tmpMachines() string { return filepath.Join(s.machines, ".tmp") }

// ValidName reports why name cannot name an image or a machine, or nil: the
// one name rule of berth (rundir.CheckName, a DNS label). Names become
// directory and file names here, so nothing like ../x, a leading dot (the
// store's own work directories) or a slash gets through. The error matches
// ErrInvalid.
func ValidName(name string) error { return rundir.CheckName(name) }

// errorf formats an error of a class: errors.Is(err, class) holds, and the text is
// only the message (no "not found:" suffix glued on). %w verbs in format still wrap.
func errorf(class error, format string, args ...any) error {
	return errdefs.Errorf(class, format, args...)
}

// workDir is a directory under a .tmp folder that one operation fills, holding
// an flock on it for its whole life: cleanTemp removes only work directories
// whose flock it can take, so two processes never remove each other's work.
type workDir struct {
	path string
	f    *os.File
}

func newWorkDir(parent, prefix string) (*workDir, error) {
	// Between MkdirTemp and Flock another process's cleanTemp may take the free
	// lock and remove the new directory; then we simply make another.
	var lastErr error
	for range 10 {
		p, err := os.MkdirTemp(parent, prefix)
		if err != nil {
			return nil, err
		}
		f, err := os.Open(p)
		if err != nil {
			lastErr = err
			continue
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			lastErr = fmt.Errorf("lock %s: %w", p, err)
			continue
		}
		if _, err := os.Lstat(p); err != nil {
			f.Close() // removed before we locked it
			lastErr = err
			continue
		}
		return &workDir{path: p, f: f}, nil
	}
	return nil, lastErr
}

// discard removes whatever is left of the work directory and drops its lock.
// After a successful rename into place nothing is left to remove.
func (w *workDir) discard() {
	if w == nil || w.f == nil {
		return
	}
	if _, err := os.Lstat(w.path); err == nil {
		if err := removeTree(w.path); err != nil {
			slog.Warn("rootfs: cannot remove work directory; the next start removes it", "path", w.path, "err", err)
		}
	}
	w.f.Close()
	w.f = nil
}

// cleanTemp removes the work directories of operations that died (their flock is
// free). It runs at Open; the flock makes it safe while other processes work.
func (s *Store) cleanTemp() {
	for _, parent := range []string{s.tmpImages(), s.tmpMachines()} {
		ents, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		for _, e := range ents {
			p := filepath.Join(parent, e.Name())
			f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
			if err != nil {
				_ = os.Remove(p) // not a directory of ours: a stray file or link
				continue
			}
			if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
				slog.Info("rootfs: removing work directory of an interrupted operation", "path", p)
				if err := removeTree(p); err != nil {
					slog.Warn("rootfs: cannot remove work directory", "path", p, "err", err)
				}
			}
			f.Close()
		}
	}
}

// storeLock takes the store-wide flock: shared by operations that make a root
// from an image (the image must not go away meanwhile), exclusive by those that
// change names or remove images. Goroutines of one process exclude each other
// as separate processes do (see fsutil.Lock).
func (s *Store) storeLock(exclusive bool) (unlock func(), err error) {
	unlock, err = fsutil.Lock(filepath.Join(s.images, ".lock"), exclusive)
	if err != nil {
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	return unlock, nil
}
