package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/internal/osimage"

	"github.com/berthd/berth/rootfs/hold"
	"golang.org/x/sys/unix"
)

// Strategy is how a machine root is made from an image. The names are package
// spec's (Root.Strategy).
type Strategy string

const (
	// StrategyAuto picks the cheapest the filesystem allows: btrfs, then
	// reflink, then overlay, then copy.
	StrategyAuto Strategy = "auto"
	// StrategyOverlay keeps the image as overlayfs' read-only lower layer and the
	// machine's changes in its own upper directory. Making one costs two mkdirs.
	StrategyOverlay Strategy = "overlay"
	// StrategyBtrfs makes the root a writable snapshot of the image's subvolume.
	StrategyBtrfs Strategy = "btrfs"
	// StrategyReflink copies the tree with copy-on-write file clones (xfs, btrfs).
	StrategyReflink Strategy = "reflink"
	// StrategyCopy copies every byte.
	StrategyCopy Strategy = "copy"
)

// ParseStrategy checks a strategy name; "" means Auto.
func ParseStrategy(s string) (Strategy, error) {
	switch st := Strategy(s); st {
	case "":
		return StrategyAuto, nil
	case StrategyAuto, StrategyOverlay, StrategyBtrfs, StrategyReflink, StrategyCopy:
		return st, nil
	}
	return "", errorf(ErrInvalid, "root strategy %q: use auto, overlay, btrfs, reflink or copy", s)
}

// Root is a machine's persistent root filesystem. It is plain data: either a
// directory (Dir) or the three directories of an overlay mount (Overlay) that
// the machine's supervisor mounts inside the machine's own mount namespace, so
// that nothing stays mounted on the host.
type Root struct {
	Machine  string    `json:"machine"`
	Image    string    `json:"image"`  // the image name it was made from
	Digest   string    `json:"digest"` // the image content it was made from
	Strategy Strategy  `json:"strategy"`
	Created  time.Time `json:"created"`
	// ClonedFrom names the machine this root was cloned from, if any.
	ClonedFrom string `json:"clonedFrom,omitempty"`
	// Shift is set when the root's owners were shifted into a machine's UID
	// range (where its filesystem cannot be idmapped; see PrepareUsers).
	Shift *Shift `json:"shift,omitempty"`
	// Layers are the diff IDs, lowest first, of the OCI image layers an
	// overlay root has as its lower dirs (each once): the store keeps them
	// while the root exists.
	Layers []string `json:"layers,omitempty"`
	// Provisioned is when the machine's files: were written into this root
	// before its first boot (Store.Provision); after it, never again.
	Provisioned *time.Time `json:"provisioned,omitempty"`

	// Path is the machine's directory, STATE/machines/NAME.
	Path string `json:"-"`
	// Dir is the root directory for the btrfs, reflink and copy strategies.
	Dir string `json:"-"`
	// Overlay is set for the overlay strategy.
	Overlay *Overlay `json:"-"`
}

// Overlay is an overlayfs root: the image's tree as the only, read-only lower
// layer (or an OCI image's layers), and the machine's own upper and work
// directories.
type Overlay struct {
	Lower []string // uppermost first, as in lowerdir=
	Upper string
	Work  string
}

// MountData is the data argument of mount(2) for the overlay: `mount -t overlay
// overlay -o DATA TARGET`. index=off keeps the upper directory self-contained
// (no file handles recorded in the work directory), which is what lets a clone
// copy the upper directory alone and mount it over the same lower. The
// options of more than about 38 layers of the store do not fit in the page
// mount(2) takes: the machine's supervisor mounts those through fsconfig.
func (o *Overlay) MountData() string {
	lowers := make([]string, len(o.Lower))
	for i, l := range o.Lower {
		lowers[i] = escapeOverlayPath(l)
	}
	return "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + escapeOverlayPath(o.Upper) +
		",workdir=" + escapeOverlayPath(o.Work) + ",index=off"
}

// escapeOverlayPath escapes what overlayfs' option parser treats specially.
func escapeOverlayPath(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`)
	return r.Replace(p)
}

// rootMeta is STATE/machines/NAME/root.json: Root's stored fields.
const rootMetaFile = "root.json"

func (s *Store) machineDir(machine string) string { return hold.MachineDir(s.dir, machine) }

// HasRoot says whether the machine has a root in the store under stateDir,
// without opening the store (which would make its directories).
func HasRoot(stateDir, machine string) bool {
	_, err := os.Stat(filepath.Join(stateDir, "machines", machine, rootMetaFile))
	return err == nil
}

// Root returns the machine's root, or an error matching ErrNotFound when it has
// none.
func (s *Store) Root(machine string) (*Root, error) {
	if err := ValidName(machine); err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	dir := s.machineDir(machine)
	var r Root
	if err := readJSON(filepath.Join(dir, rootMetaFile), &r); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dir); serr == nil {
				return nil, fmt.Errorf("machine %q: %s exists but has no %s: it was not made by berth; move it away", machine, dir, rootMetaFile)
			}
			return nil, errorf(ErrNotFound, "machine %q has no root", machine)
		}
		return nil, fmt.Errorf("machine %q: %w", machine, err)
	}
	r.Machine = machine
	r.Path = dir
	switch r.Strategy {
	case StrategyOverlay:
		r.Overlay = &Overlay{
			Lower: s.overlayLowers(r.Digest, r.Layers),
			Upper: filepath.Join(dir, "upper"),
			Work:  filepath.Join(dir, "work"),
		}
	case StrategyBtrfs, StrategyReflink, StrategyCopy:
		r.Dir = filepath.Join(dir, "rootfs")
	default:
		return nil, fmt.Errorf("machine %q: %s names an unknown strategy %q", machine, filepath.Join(dir, rootMetaFile), r.Strategy)
	}
	return &r, nil
}

// overlayLowers is the lower dirs, uppermost first, of an overlay root made
// from the image content digest (a plain image's tree) or from the OCI
// layers (diff IDs, lowest first).
func (s *Store) overlayLowers(digest string, layers []string) []string {
	if len(layers) == 0 {
		return []string{filepath.Join(s.digestDir(digest), "rootfs")}
	}
	lower := make([]string, len(layers))
	for i, id := range layers {
		lower[len(layers)-1-i] = s.layerTree(id)
	}
	return lower
}

// Roots lists every machine root, sorted by machine name.
func (s *Store) Roots() ([]Root, error) {
	ents, err := os.ReadDir(s.machines)
	if err != nil {
		return nil, fmt.Errorf("machine roots: %w", err)
	}
	var out []Root
	for _, e := range ents {
		if !e.IsDir() || ValidName(e.Name()) != nil {
			continue
		}
		r, err := s.Root(e.Name())
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				slog.Warn("rootfs: skipping unreadable machine root", "machine", e.Name(), "err", err)
			}
			continue
		}
		out = append(out, *r)
	}
	return out, nil
}

// fsCaps is what the filesystem under the state directory can do, probed once.
type fsCaps struct {
	fsType  string // for messages: ext4, xfs, btrfs, …
	btrfs   bool   // images and machines on btrfs
	reflink bool   // FICLONE works from the image store to the machines dir
	overlay bool   // overlayfs exists and can use this filesystem as upper
}

func (s *Store) probe() fsCaps {
	s.probeOnce.Do(func() {
		var sfs unix.Statfs_t
		if err := unix.Statfs(s.machines, &sfs); err == nil {
			s.caps.fsType = fsutil.TypeName(int64(sfs.Type))
		}
		s.caps.btrfs = isBtrfs(s.machines) && isBtrfs(s.images)
		s.caps.reflink = s.probeReflink()
		s.caps.overlay = haveOverlay() && s.caps.fsType != "overlayfs" && s.caps.fsType != "nfs" && s.caps.fsType != "fuse"
	})
	return s.caps
}

// probeReflink tries one FICLONE from the image store to the machines directory.
func (s *Store) probeReflink() bool {
	a, err := os.CreateTemp(s.tmpImages(), ".reflink-probe-")
	if err != nil {
		return false
	}
	defer os.Remove(a.Name())
	defer a.Close()
	if _, err := a.Write(make([]byte, 4096)); err != nil {
		return false
	}
	b, err := os.CreateTemp(s.tmpMachines(), ".reflink-probe-")
	if err != nil {
		return false
	}
	defer os.Remove(b.Name())
	defer b.Close()
	return unix.IoctlFileClone(int(b.Fd()), int(a.Fd())) == nil
}

func haveOverlay() bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(strings.TrimPrefix(l, "nodev")) == "overlay" {
			return true
		}
	}
	return false
}

// chooseStrategy resolves want against what the filesystem can do; imageSubvol
// tells whether the image's tree is a btrfs subvolume (images imported on btrfs
// are). Auto takes the first that works of btrfs, reflink, overlay, copy: a
// snapshot or reflinked copy is an independent tree, while an overlay root ties
// the machine to the image content for its life.
func chooseStrategy(want Strategy, caps fsCaps, imageSubvol bool) (Strategy, error) {
	btrfsOK := caps.btrfs && imageSubvol
	switch want {
	case StrategyAuto, "":
		switch {
		case btrfsOK:
			return StrategyBtrfs, nil
		case caps.reflink:
			return StrategyReflink, nil
		case caps.overlay:
			return StrategyOverlay, nil
		}
		return StrategyCopy, nil
	case StrategyBtrfs:
		if !btrfsOK {
			if !caps.btrfs {
				return "", errorf(ErrUnsupported, "root strategy btrfs needs the state directory on btrfs; it is on %s: use auto, overlay or copy", caps.fsType)
			}
			return "", errorf(ErrUnsupported, "root strategy btrfs: the image is not a btrfs subvolume (imported before the store was on btrfs?): re-import it, or use auto")
		}
	case StrategyReflink:
		if !caps.reflink {
			return "", errorf(ErrUnsupported, "root strategy reflink: %s here does not support reflinks (xfs with reflink=1 and btrfs do): use auto, overlay or copy", caps.fsType)
		}
	case StrategyOverlay:
		if !caps.overlay {
			return "", errorf(ErrUnsupported, "root strategy overlay: the kernel has no overlayfs or %s cannot be its upper layer: use auto or copy", caps.fsType)
		}
	case StrategyCopy:
	default:
		_, err := ParseStrategy(string(want))
		return "", err
	}
	return want, nil
}

// CreateRoot makes the machine's root from image (a name or a digest) with the
// strategy (StrategyAuto picks the best here). It is idempotent: when the machine has a
// root already, that root is returned as it is, whatever image it was made from
// (compare Root.Digest with the image's to see if it is outdated). The root is
// built in a work directory and renamed into place, so a failure leaves none.
func (s *Store) CreateRoot(ctx context.Context, machine, image string, strategy Strategy) (*Root, error) {
	if err := ValidName(machine); err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	if r, err := s.Root(machine); err == nil || !errors.Is(err, ErrNotFound) {
		return r, err
	}
	// The image must not be removed while the root is made from it.
	unlock, err := s.storeLock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	img, err := s.machineImage(machine, image)
	if err != nil {
		return nil, err
	}
	st, err := imageStrategy(strategy, s.probe(), img)
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", machine, err)
	}
	start := time.Now()
	r := newRoot(machine, img, st)
	made, err := s.commitRoot(machine, "create-", r, func(dir string) error { return buildRoot(ctx, img, st, dir) })
	if err != nil {
		return nil, err
	}
	if made {
		slog.Info("rootfs: machine root created", "machine", machine, "image", r.Image, "digest", r.Digest, "strategy", st, "took", time.Since(start).Round(time.Microsecond))
	}
	return s.Root(machine)
}

// buildRoot fills the machine directory dir with a root of img by st.
func buildRoot(ctx context.Context, img *Image, st Strategy, dir string) error {
	lowers := img.Lowers()
	switch st {
	case StrategyOverlay:
		if err := makeOverlayDirs(dir, lowers[0]); err != nil {
			return err
		}
		return osimage.ResetMachineID(filepath.Join(dir, "upper"), lowers)
	case StrategyBtrfs:
		if err := snapshotSubvolume(img.Path, filepath.Join(dir, "rootfs")); err != nil {
			return err
		}
		return osimage.ResetMachineID(filepath.Join(dir, "rootfs"), nil)
	}
	tree := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return err
	}
	rep := newReporter(progressFrom(ctx))
	rep.start("copy", img.Size)
	opts := copyOptions{reflink: st == StrategyReflink, progress: rep.update}
	var n int64
	var err error
	if img.Kind == ImageKindOCI {
		lowest := slices.Clone(lowers)
		slices.Reverse(lowest)
		n, err = flattenLayers(ctx, lowest, tree, opts)
	} else {
		n, err = copyTree(ctx, img.Path, tree, opts)
	}
	rep.finish(n)
	if err != nil {
		return err
	}
	return osimage.ResetMachineID(tree, nil)
}

// makeOverlayDirs makes the upper and work directories of an overlay root. The
// upper directory's root carries the image root's owner, mode and xattrs: it
// is what the machine sees as "/".
func makeOverlayDirs(dir, lower string) error {
	upper := filepath.Join(dir, "upper")
	if err := os.Mkdir(upper, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(dir, "work"), 0o700); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(lower, &st); err != nil {
		return &os.PathError{Op: "stat", Path: lower, Err: err}
	}
	if err := os.Lchown(upper, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := os.Chmod(upper, os.FileMode(st.Mode&0o777)|unixModeBits(st.Mode)); err != nil {
		return err
	}
	xs, err := pathXattrs(lower, lower)
	if err != nil {
		return err
	}
	for _, x := range xs {
		if strings.HasPrefix(x.name, "trusted.overlay.") {
			continue // an opaque top layer must not make the upper directory hide the layers
		}
		if err := unix.Lsetxattr(upper, x.name, x.value, 0); err != nil && err != unix.ENOTSUP {
			return &os.PathError{Op: "setxattr " + x.name, Path: upper, Err: err}
		}
	}
	return nil
}

func unixModeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&unix.S_ISUID != 0 {
		fm |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		fm |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// commitRoot builds a machine directory in a work directory with build, writes
// its root.json and lock file, and renames it into place unless the machine got
// a root meanwhile (then made is false and the other root stays).
func (s *Store) commitRoot(machine, prefix string, r Root, build func(dir string) error) (made bool, err error) {
	wd, err := newWorkDir(s.tmpMachines(), prefix+machine+"-")
	if err != nil {
		return false, fmt.Errorf("machine %q: %w", machine, err)
	}
	defer wd.discard()
	if err := os.Chmod(wd.path, 0o700); err != nil {
		return false, err
	}
	if err := build(wd.path); err != nil {
		return false, fmt.Errorf("machine %q: make root (%s): %w", machine, r.Strategy, err)
	}
	if err := os.WriteFile(filepath.Join(wd.path, lockFile), nil, 0o600); err != nil {
		return false, fmt.Errorf("machine %q: %w", machine, err)
	}
	if err := writeJSON(filepath.Join(wd.path, rootMetaFile), r); err != nil {
		return false, fmt.Errorf("machine %q: %w", machine, err)
	}
	if r.Strategy != StrategyOverlay {
		if err := syncTree(wd.path); err != nil {
			return false, fmt.Errorf("machine %q: %w", machine, err)
		}
	}
	err = unix.Renameat2(unix.AT_FDCWD, wd.path, unix.AT_FDCWD, s.machineDir(machine), unix.RENAME_NOREPLACE)
	if err == unix.EEXIST || err == unix.ENOTEMPTY {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("machine %q: %w", machine, &os.PathError{Op: "rename", Path: s.machineDir(machine), Err: err})
	}
	syncDir(s.machines)
	return true, nil
}

// RemoveRoot deletes the machine's root when deleteData is true and returns the
// bytes freed (the root's own data, and the image content it was the last user
// of when no name refers to that any more). With deleteData false nothing is
// deleted: the root is data and stays, and the size returned is what deleting it
// would free. Both refuse a running machine (one whose root lock is held).
func (s *Store) RemoveRoot(machine string, deleteData bool) (int64, error) {
	lock, err := s.lockRoot(machine, "remove it")
	if err != nil {
		return 0, err
	}
	defer lock.Unlock()
	r, err := s.Root(machine)
	if err != nil {
		return 0, err
	}
	size, err := r.Usage(context.Background())
	if err != nil {
		return 0, fmt.Errorf("machine %q: %w", machine, err)
	}
	if !deleteData {
		return size, nil
	}
	if err := s.discardDir(r.Path, "remove-"+machine+"-"); err != nil {
		return 0, fmt.Errorf("machine %q: delete root: %w", machine, err)
	}
	slog.Info("rootfs: machine root deleted", "machine", machine, "freed", size)
	unlock, err := s.storeLock(true)
	if err != nil {
		return size, nil
	}
	defer unlock()
	if ref, err := s.readRef(r.Image); err != nil || ref.Digest != r.Digest {
		// An older build of the image (or a digest) that only roots kept.
		freed, err := s.gcDigest(r.Digest)
		if err != nil {
			slog.Warn("rootfs: cannot remove unused image content", "digest", r.Digest, "err", err)
		}
		size += freed
	}
	return size, nil
}

// Usage is the disk space the machine's own data takes: the whole tree for
// dir roots, the upper and work directories for overlay roots (the image layer
// is shared).
func (r *Root) Usage(ctx context.Context) (int64, error) {
	if r.Overlay == nil {
		return diskUsage(ctx, r.Dir)
	}
	var total int64
	for _, d := range []string{r.Overlay.Upper, r.Overlay.Work} {
		n, err := diskUsage(ctx, d)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
		total += n
	}
	return total, nil
}
