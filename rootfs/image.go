package rootfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/rootfs/hold"
	"golang.org/x/sys/unix"
)

// Image is a named, immutable root filesystem tree in the store.
type Image struct {
	// Name is the reference's name; empty for a digest that no name points to
	// any more but that machine roots still use (an older build).
	Name   string `json:"name"`
	Digest string `json:"digest"` // sha256:HEX of the tree's manifest
	// Source describes where the tree came from (dir:…, tar:…, debootstrap:…).
	Source string `json:"source"`
	// SpecHash is what the importer passed (the hash of the Image definition),
	// so that the daemon can tell when a declared image changed.
	SpecHash string    `json:"specHash,omitempty"`
	Size     int64     `json:"size"`  // disk usage in bytes
	Files    int64     `json:"files"` // number of files, directories and links
	Created  time.Time `json:"created"`
	// Path is the tree: the overlay lower directory of machines made from it.
	// Empty for an OCI image, whose trees are its layers (Lowers).
	Path string `json:"path,omitempty"`
	// UsedBy lists the machines whose roots were made from this digest, and
	// the snapshots of roots made from it as MACHINE@SNAP.
	UsedBy []string `json:"usedBy,omitempty"`

	// Kind is ImageKindOCI for an OCI image, whose layers are stored apart
	// and shared with other images; empty for a single tree. The fields
	// below are an OCI image's: Digest is then its manifest's digest and
	// Size the disk usage of its layers, each once.
	Kind     string `json:"kind,omitempty"`
	Ref      string `json:"ref,omitempty"`      // what was pulled (docker.io/library/debian:bookworm)
	Platform string `json:"platform,omitempty"` // os/architecture[/variant]
	// Layers, lowest first, as in the manifest.
	Layers []ImageLayer `json:"layers,omitempty"`
	// Shared is the part of Size in layers that other stored images use too.
	Shared int64        `json:"shared,omitempty"`
	Config *ImageConfig `json:"config,omitempty"`
}

// ImportOptions tune Import.
type ImportOptions struct {
	// SpecHash is stored with the image (see Image.SpecHash).
	SpecHash string
	// Progress receives reports of the long steps; nil falls back to the
	// context's (WithProgress).
	Progress ProgressFunc
}

// digestMeta is STATE/images/sha256/HEX/image.json.
type digestMeta struct {
	Digest  string    `json:"digest"`
	Source  string    `json:"source"`
	Size    int64     `json:"size"`
	Files   int64     `json:"files"`
	Created time.Time `json:"created"`

	// An OCI image's (Kind ImageKindOCI): no rootfs/ beside, its layers in
	// the layer store.
	Kind     string       `json:"kind,omitempty"`
	Ref      string       `json:"ref,omitempty"`
	Platform string       `json:"platform,omitempty"`
	Layers   []layerRef   `json:"layers,omitempty"`
	Config   *ImageConfig `json:"config,omitempty"`
}

// nameRef is STATE/images/names/NAME.json.
type nameRef struct {
	Name     string    `json:"name"`
	Digest   string    `json:"digest"`
	Source   string    `json:"source"`
	SpecHash string    `json:"specHash,omitempty"`
	Created  time.Time `json:"created"`
}

func (s *Store) digestDir(digest string) string { return hold.ContentDir(s.dir, digest) }

func (s *Store) namePath(name string) string {
	return filepath.Join(s.images, "names", name+".json")
}

// Import builds the image name from src and makes name refer to it. The tree is
// built in a work directory of the store, hashed, and renamed into place under
// its digest; only then does the name move to it, so a failure or a kill at any
// moment leaves the previous image (if any) in place and no partial one
// visible. An image whose digest is already stored is not stored twice. The
// digest name referred to before stays while machine roots use it and is
// removed otherwise.
//
// A Layered source (an OCI image) is resolved instead, and only the layers
// the store lacks are unpacked (layers.go); its digest is the manifest's.
func (s *Store) Import(ctx context.Context, name string, src Source, opts ImportOptions) (*Image, error) {
	if err := ValidName(name); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if src == nil {
		return nil, errorf(ErrInvalid, "image %q: no source", name)
	}
	if err := src.check(); err != nil {
		return nil, fmt.Errorf("image %q: %w", name, err)
	}
	fn := opts.Progress
	if fn == nil {
		fn = progressFrom(ctx)
	}
	rep := newReporter(fn)
	if l, ok := src.(Layered); ok {
		return s.importLayered(ctx, name, l, opts, rep)
	}
	log := slog.With("image", name, "source", src.String())
	start := time.Now()

	wd, err := newWorkDir(s.tmpImages(), "import-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", name, err)
	}
	defer wd.discard()
	tree := filepath.Join(wd.path, "rootfs")
	if err := makeTreeDir(tree); err != nil {
		return nil, fmt.Errorf("image %q: %w", name, err)
	}
	if err := src.build(ctx, tree, rep); err != nil {
		return nil, fmt.Errorf("image %q: %w", name, err)
	}
	rep.start("digest", 0)
	sum, err := treeDigest(ctx, tree, rep.update)
	if err != nil {
		return nil, fmt.Errorf("image %q: hash the tree: %w", name, err)
	}
	rep.finish(sum.bytes)
	now := time.Now().UTC()
	meta := digestMeta{Digest: sum.digest, Source: src.String(), Size: sum.size, Files: sum.files, Created: now}
	if err := writeJSON(filepath.Join(wd.path, "image.json"), meta); err != nil {
		return nil, fmt.Errorf("image %q: %w", name, err)
	}
	if err := syncTree(tree); err != nil {
		return nil, fmt.Errorf("image %q: %w", name, err)
	}

	rep.start("commit", 0)
	unlock, err := s.storeLock(true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	final := s.digestDir(sum.digest)
	if err := unix.Renameat2(unix.AT_FDCWD, wd.path, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE); err != nil {
		if err != unix.EEXIST && err != unix.ENOTEMPTY {
			return nil, fmt.Errorf("image %q: store %s: %w", name, final, err)
		}
		log.Info("rootfs: image content already stored", "digest", sum.digest)
	}
	syncDir(filepath.Dir(final))
	ref := nameRef{Name: name, Digest: sum.digest, Source: src.String(), SpecHash: opts.SpecHash, Created: now}
	if err := s.moveName(ref); err != nil {
		return nil, fmt.Errorf("image %q: %w", name, err)
	}
	rep.finish(0)
	log.Info("rootfs: image imported", "digest", sum.digest, "size", sum.size, "took", time.Since(start).Round(time.Millisecond))
	return s.image(ref)
}

// moveName points ref.Name at ref.Digest, then removes the content the name
// referred to before unless something still uses it. The caller holds the
// store lock exclusively.
func (s *Store) moveName(ref nameRef) error {
	old, _ := s.readRef(ref.Name)
	if err := writeJSON(s.namePath(ref.Name), ref); err != nil {
		return err
	}
	if old != nil && old.Digest != ref.Digest {
		if _, err := s.gcDigest(old.Digest); err != nil {
			slog.Warn("rootfs: cannot remove the image's previous content", "image", ref.Name, "digest", old.Digest, "err", err)
		}
	}
	return nil
}

// syncTree flushes a freshly written tree to disk before it is renamed into
// place, so that a crash after the rename never exposes a tree with holes.
// syncfs is one call for the whole filesystem.
func syncTree(p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return &os.PathError{Op: "syncfs", Path: p, Err: err}
	}
	return nil
}

func syncDir(p string) {
	if d, err := os.Open(p); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

func writeJSON(p string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(p, append(b, '\n'), 0o600)
}

func readJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

func (s *Store) readRef(name string) (*nameRef, error) {
	var ref nameRef
	if err := readJSON(s.namePath(name), &ref); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errorf(ErrNotFound, "image %q not found: import it first (berth image import)", name)
		}
		return nil, fmt.Errorf("image %q: %w", name, err)
	}
	if !validDigest(ref.Digest) {
		return nil, fmt.Errorf("image %q: %s holds no valid digest", name, s.namePath(name))
	}
	return &ref, nil
}

func (s *Store) readDigest(digest string) (*digestMeta, error) {
	var m digestMeta
	if err := readJSON(filepath.Join(s.digestDir(digest), "image.json"), &m); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errorf(ErrNotFound, "image content %s not found", digest)
		}
		return nil, err
	}
	return &m, nil
}

func (s *Store) image(ref nameRef) (*Image, error) {
	img, err := s.imageOnly(ref)
	if err != nil {
		return nil, err
	}
	roots, _ := s.Roots()
	for _, r := range roots {
		if r.Digest == ref.Digest {
			img.UsedBy = append(img.UsedBy, r.Machine)
		}
	}
	sns, _ := s.Snapshots("")
	for _, sn := range sns {
		if sn.Digest == ref.Digest {
			img.UsedBy = append(img.UsedBy, sn.Machine+"@"+sn.Name)
		}
	}
	return img, nil
}

// imageOnly is image without UsedBy, which costs a read of every root.
func (s *Store) imageOnly(ref nameRef) (*Image, error) {
	m, err := s.readDigest(ref.Digest)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", ref.Name, err)
	}
	img := &Image{Name: ref.Name, Digest: ref.Digest, Source: ref.Source, SpecHash: ref.SpecHash,
		Size: m.Size, Files: m.Files, Created: ref.Created, Path: filepath.Join(s.digestDir(ref.Digest), "rootfs")}
	if m.Kind == ImageKindOCI {
		if err := s.describeLayers(img, m); err != nil {
			return nil, fmt.Errorf("image %q: %w", ref.Name, err)
		}
	}
	return img, nil
}

// Image returns the image name refers to, or an error matching ErrNotFound. A
// digest (sha256:HEX) names stored content directly, with or without a name.
func (s *Store) Image(name string) (*Image, error) {
	ref, err := s.lookup(name)
	if err != nil {
		return nil, err
	}
	img, err := s.image(*ref)
	if err != nil {
		return nil, err
	}
	if img.Kind == ImageKindOCI {
		users, err := s.layerUsers()
		if err != nil {
			return nil, err
		}
		markShared([]*Image{img}, users)
	}
	return img, nil
}

// ImageOf is the image a root was made from (its digest), as Image
// describes it but without UsedBy and Shared: those read every root and
// every image, which a machine's start, needing only the image's layers and
// config, must not pay for.
func (s *Store) ImageOf(r *Root) (*Image, error) {
	ref, err := s.lookup(r.Digest)
	if err != nil {
		return nil, err
	}
	return s.imageOnly(*ref)
}

// imageNamed is Image without Shared, which costs a read of every image.
func (s *Store) imageNamed(name string) (*Image, error) {
	ref, err := s.lookup(name)
	if err != nil {
		return nil, err
	}
	return s.image(*ref)
}

// lookup resolves an image name or digest to a reference.
func (s *Store) lookup(name string) (*nameRef, error) {
	if validDigest(name) {
		m, err := s.readDigest(name)
		if err != nil {
			return nil, err
		}
		return &nameRef{Digest: name, Source: m.Source, Created: m.Created}, nil
	}
	if err := ValidName(name); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	return s.readRef(name)
}

// Images lists the named images by name, then the stored digests no name refers
// to (older builds still used by machine roots, or leftovers for Prune) with an
// empty Name.
func (s *Store) Images() ([]Image, error) {
	ents, err := os.ReadDir(filepath.Join(s.images, "names"))
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	named := map[string]bool{}
	var out []Image
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || ValidName(name) != nil {
			continue
		}
		img, err := s.imageNamed(name)
		if err != nil {
			slog.Warn("rootfs: skipping unreadable image", "image", name, "err", err)
			continue
		}
		named[img.Digest] = true
		out = append(out, *img)
	}
	digests, err := s.digests()
	if err != nil {
		return nil, err
	}
	for _, d := range digests {
		if named[d] {
			continue
		}
		img, err := s.imageNamed(d)
		if err != nil {
			continue
		}
		out = append(out, *img)
	}
	ptrs := make([]*Image, len(out))
	for i := range out {
		ptrs[i] = &out[i]
	}
	markShared(ptrs, usersOf(ptrs))
	return out, nil
}

// digests lists the stored contents.
func (s *Store) digests() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.images, "sha256"))
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	var out []string
	for _, e := range ents {
		if d := "sha256:" + e.Name(); validDigest(d) && e.IsDir() {
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out, nil
}

// RemoveImage removes the name and, unless another name refers to the same
// content, the content. It is refused while a machine root was made from the
// image (the error names the machines) and returns the bytes freed.
func (s *Store) RemoveImage(name string) (int64, error) {
	if err := ValidName(name); err != nil {
		return 0, fmt.Errorf("image: %w", err)
	}
	unlock, err := s.storeLock(true)
	if err != nil {
		return 0, err
	}
	defer unlock()
	ref, err := s.readRef(name)
	if err != nil {
		return 0, err
	}
	roots, err := s.Roots()
	if err != nil {
		return 0, err
	}
	var users []string
	for _, r := range roots {
		if r.Image == name || r.Digest == ref.Digest {
			users = append(users, r.Machine)
		}
	}
	if len(users) > 0 {
		return 0, errorf(ErrBusy, "image %q is used by machine %s: remove %s first (berth remove --delete-data)",
			name, strings.Join(quoteAll(users), ", "), map[bool]string{true: "it", false: "them"}[len(users) == 1])
	}
	if err := os.Remove(s.namePath(name)); err != nil {
		return 0, fmt.Errorf("image %q: %w", name, err)
	}
	syncDir(filepath.Dir(s.namePath(name)))
	return s.gcDigest(ref.Digest)
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// gcDigest removes stored content that no name, machine root or snapshot refers to,
// and the layers only it used, returning the bytes freed. The caller holds
// the store lock exclusively.
func (s *Store) gcDigest(digest string) (int64, error) {
	removed, size, err := s.removeDigest(digest)
	if err != nil || !removed {
		return size, err
	}
	_, freed, err := s.gcLayers()
	return size + freed, err
}

// removeDigest is gcDigest but for the layers.
func (s *Store) removeDigest(digest string) (removed bool, size int64, err error) {
	if used, err := s.digestUsed(digest); err != nil || used {
		return false, 0, err
	}
	m, err := s.readDigest(digest)
	if err == nil && m.Kind != ImageKindOCI { // an OCI image's record is small; its layers are counted apart
		size = m.Size
	}
	if err := s.discardDir(s.digestDir(digest), "remove-image-"); err != nil {
		return false, 0, fmt.Errorf("image content %s: %w", digest, err)
	}
	slog.Info("rootfs: removed image content", "digest", digest, "size", size)
	return true, size, nil
}

// digestUsed reports whether a name, a machine root or a snapshot of one
// refers to digest, or a running ephemeral machine uses it.
func (s *Store) digestUsed(digest string) (bool, error) {
	if s.imageInUse(digest) {
		return true, nil
	}
	ents, err := os.ReadDir(filepath.Join(s.images, "names"))
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			if ref, err := s.readRef(name); err == nil && ref.Digest == digest {
				return true, nil
			}
		}
	}
	roots, err := s.Roots()
	if err != nil {
		return false, err
	}
	for _, r := range roots {
		if r.Digest == digest {
			return true, nil
		}
	}
	snapDigests, _, err := s.snapshotUsers()
	if err != nil {
		return false, err
	}
	return snapDigests[digest], nil
}

// discardDir makes the directory p disappear at once (a rename into a locked
// work directory) and then deletes it; a kill midway leaves only the work
// directory, which the next Open removes.
func (s *Store) discardDir(p, prefix string) error {
	parent := s.tmpImages()
	if strings.HasPrefix(p, s.machines+string(filepath.Separator)) {
		parent = s.tmpMachines()
	}
	wd, err := newWorkDir(parent, prefix)
	if err != nil {
		return err
	}
	defer wd.discard()
	if err := os.Rename(p, filepath.Join(wd.path, "root")); err != nil {
		return err
	}
	syncDir(filepath.Dir(p))
	return removeTree(wd.path)
}

// PruneResult tells what Prune removed.
type PruneResult struct {
	Digests []string `json:"digests"`
	// Layers are the diff IDs of the layers removed.
	Layers []string `json:"layers,omitempty"`
	Freed  int64    `json:"freed"`
}

// Prune removes stored content that no name, no machine root and no snapshot
// refers to, the layers that no stored image, no machine root, no snapshot and
// no import in progress uses, and the work directories of interrupted operations.
func (s *Store) Prune() (PruneResult, error) {
	var res PruneResult
	s.cleanTemp()
	unlock, err := s.storeLock(true)
	if err != nil {
		return res, err
	}
	defer unlock()
	digests, err := s.digests()
	if err != nil {
		return res, err
	}
	for _, d := range digests {
		used, err := s.digestUsed(d)
		if err != nil {
			return res, err
		}
		if used {
			continue
		}
		_, freed, err := s.removeDigest(d)
		if err != nil {
			return res, err
		}
		res.Digests = append(res.Digests, d)
		res.Freed += freed
	}
	layers, freed, err := s.gcLayers()
	res.Layers = layers
	res.Freed += freed
	return res, err
}
