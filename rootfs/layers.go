package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The layer store: every layer of the OCI images imported is unpacked once,
// under its diff ID, whatever image it came with, and shared:
//
//	STATE/images/layers/sha256/HEX/       one layer, HEX its diff ID:
//	    layer.json                        diff ID, blob digest and size, disk usage, files
//	    tree/                             its files, OCI whiteouts turned into
//	                                      overlayfs ones: an overlay lower dir
//	STATE/images/sha256/HEX/image.json    an OCI image, HEX its manifest digest: kind
//	                                      "oci", ref, platform, the layers, the config
//
// A layer is unpacked in a work directory (images/.tmp/layer-…), checked
// against its diff ID, converted, flushed and renamed into place with
// RENAME_NOREPLACE: two imports that unpack the same layer at once both
// succeed and one copy stays. The import's own work directory
// (images/.tmp/import-…, flocked while it runs) holds a lease listing the
// image's layers, so a prune meanwhile keeps them; the image record and then
// the name are written last, as for a tree.

// ImageKindOCI is Image.Kind of an image stored as layers.
const ImageKindOCI = "oci"

// maxLayers is overlayfs' limit on lower layers (OVL_MAX_STACK).
const maxLayers = 500

const (
	layerMetaFile = "layer.json"
	layerTreeDir  = "tree"
	leaseFile     = "layers.json" // in an import's work directory
)

// layerMeta is STATE/images/layers/sha256/HEX/layer.json.
type layerMeta struct {
	DiffID   string `json:"diffID"`
	Digest   string `json:"digest,omitempty"`   // the blob it was unpacked from
	BlobSize int64  `json:"blobSize,omitempty"` // that blob's size
	Size     int64  `json:"size"`               // disk usage of the tree
	Files    int64  `json:"files"`
	// OpaqueRoot: the layer's root is opaque (./.wh..wh..opq), hiding every
	// layer below it.
	OpaqueRoot bool      `json:"opaqueRoot,omitempty"`
	Created    time.Time `json:"created"`
}

// layerRef is one layer in an image record, lowest first.
type layerRef struct {
	DiffID string `json:"diffID"`
	Digest string `json:"digest,omitempty"` // blob digest, as the manifest has it
	Size   int64  `json:"size,omitempty"`   // blob size
}

// ImageLayer is one layer of an OCI image (Image.Layers).
type ImageLayer struct {
	DiffID   string `json:"diffID"`
	Digest   string `json:"digest,omitempty"`   // the blob's (compressed) digest
	BlobSize int64  `json:"blobSize,omitempty"` // the blob's size
	Size     int64  `json:"size"`               // disk usage unpacked
	Files    int64  `json:"files"`
	// Shared says another stored image uses the layer too.
	Shared bool `json:"shared,omitempty"`
	// OpaqueRoot says the layer hides every layer below it.
	OpaqueRoot bool `json:"opaqueRoot,omitempty"`
	// Path is the unpacked tree, an overlay lower dir.
	Path string `json:"path"`
}

func (s *Store) layersDir() string { return filepath.Join(s.images, "layers", "sha256") }

func (s *Store) layerDir(diffID string) string {
	return filepath.Join(s.layersDir(), strings.TrimPrefix(diffID, "sha256:"))
}

func (s *Store) layerTree(diffID string) string {
	return filepath.Join(s.layerDir(diffID), layerTreeDir)
}

// Lowers returns the image's trees as overlay lower dirs, uppermost first: the
// layers of an OCI image that make its root (stack), or the one tree of
// another image.
func (img *Image) Lowers() []string {
	if img.Kind != ImageKindOCI {
		return []string{img.Path}
	}
	paths := map[string]string{}
	for _, l := range img.Layers {
		paths[l.DiffID] = l.Path
	}
	ids := img.stack()
	out := make([]string, len(ids))
	for i, id := range ids {
		out[len(ids)-1-i] = paths[id]
	}
	return out
}

// stack is the diff IDs, lowest first, of the layers a root of the image
// needs: none below the uppermost layer whose root is opaque (overlayfs
// does not look at a lower root's opaque marker, so those layers go), and
// each once, where it is uppermost (what it shows lower down it shows again
// higher up, and overlayfs refuses a directory twice).
func (img *Image) stack() []string {
	from := 0
	for i, l := range img.Layers {
		if l.OpaqueRoot {
			from = i
		}
	}
	ids := make([]string, 0, len(img.Layers)-from)
	for _, l := range img.Layers[from:] {
		ids = append(ids, l.DiffID)
	}
	return uniqueLayers(ids)
}

func (img *Image) layerIDs() []string {
	ids := make([]string, len(img.Layers))
	for i, l := range img.Layers {
		ids[i] = l.DiffID
	}
	return ids
}

// uniqueLayers drops the lower repetitions of a layer in a stack, lowest
// first.
func uniqueLayers(ids []string) []string {
	seen := map[string]bool{}
	var rev []string
	for i := len(ids) - 1; i >= 0; i-- {
		if !seen[ids[i]] {
			seen[ids[i]] = true
			rev = append(rev, ids[i])
		}
	}
	out := make([]string, len(rev))
	for i, id := range rev {
		out[len(rev)-1-i] = id
	}
	return out
}

// checkLayered checks what a source resolved to before anything is stored.
func checkLayered(li *LayeredImage) error {
	if li == nil {
		return errorf(ErrInvalid, "the source resolved to no image")
	}
	if !validDigest(li.Digest) {
		return errorf(ErrInvalid, "manifest digest %q is not sha256:HEX", li.Digest)
	}
	if len(li.Layers) == 0 {
		return errorf(ErrInvalid, "image %s has no layers", li.Digest)
	}
	if len(li.Layers) > maxLayers {
		return errorf(ErrUnsupported, "image %s has %d layers: overlayfs stacks at most %d", li.Digest, len(li.Layers), maxLayers)
	}
	for i, l := range li.Layers {
		if !validDigest(l.DiffID) {
			return errorf(ErrInvalid, "layer %d (%s): diff ID %q is not sha256:HEX", i+1, l.Digest, l.DiffID)
		}
		if l.Open == nil {
			return errorf(ErrInvalid, "layer %d (%s): the source cannot open it", i+1, l.Digest)
		}
	}
	return nil
}

// layerLabel is how messages and progress name a layer: its blob digest as the
// registry shows it, or its diff ID.
func layerLabel(l Layer) string {
	if l.Digest != "" {
		return l.Digest
	}
	return l.DiffID
}

// LayerPhase is the Progress.Phase of a layer's download and unpacking:
// "layer sha256:" and the first 12 hex digits of its blob digest. Each layer
// has its own, with Total its blob size, so a display can give each a bar.
func LayerPhase(l Layer) string {
	n := layerLabel(l)
	if h, ok := strings.CutPrefix(n, "sha256:"); ok && len(h) > 12 {
		n = "sha256:" + h[:12]
	}
	return "layer " + n
}

// imageStrategy is chooseStrategy for img. An OCI image's root is an overlay
// of its layers where overlayfs works, whatever the filesystem also offers
// (O(1), and the layers stay shared), else a flattened copy; its layers are
// no one subvolume to snapshot.
func imageStrategy(want Strategy, caps fsCaps, img *Image) (Strategy, error) {
	if img.Kind != ImageKindOCI {
		return chooseStrategy(want, caps, isSubvolume(img.Path))
	}
	switch want {
	case StrategyAuto, "":
		if caps.overlay {
			return StrategyOverlay, nil
		}
	case StrategyBtrfs:
		return "", errorf(ErrUnsupported, "root strategy btrfs: image %q is an OCI image of %d layers, not one btrfs subvolume: "+
			"use root.strategy: overlay (or auto), reflink or copy", img.Name, len(img.Layers))
	}
	return chooseStrategy(want, caps, false)
}

// importLayered is Import of an OCI image: it resolves src, stores the layers
// the store lacks, records the image under its manifest digest and moves the
// name to it last.
func (s *Store) importLayered(ctx context.Context, name string, src Layered, opts ImportOptions, rep *reporter) (*Image, error) {
	start := time.Now()
	li, err := src.Resolve(ctx)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", name, err)
	}
	if err := checkLayered(li); err != nil {
		return nil, fmt.Errorf("image %q (%s): %w", name, src, err)
	}
	what := fmt.Sprintf("image %q (%s)", name, li.Ref)
	wd, err := newWorkDir(s.tmpImages(), "import-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer wd.discard()
	have, err := s.leaseLayers(wd, li)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := s.storeLayers(ctx, li, have, rep); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	meta, err := s.layeredMeta(li, src.String())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	img, err := s.commitImage(name, wd, meta, opts.SpecHash, rep)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	slog.Info("rootfs: image imported", "image", name, "ref", li.Ref, "digest", li.Digest, "layers", len(li.Layers),
		"size", meta.Size, "took", time.Since(start).Round(time.Millisecond))
	return img, nil
}

// leaseLayers writes the lease of the image's layers into the import's work
// directory and returns those already stored. The lease is written before the
// layers are looked at, and they are looked at under the store lock, so a
// prune either ran before (and what it removed is missing here) or sees the
// lease.
func (s *Store) leaseLayers(wd *workDir, li *LayeredImage) (map[string]bool, error) {
	ids := make([]string, len(li.Layers))
	for i, l := range li.Layers {
		ids[i] = l.DiffID
	}
	if err := writeJSON(filepath.Join(wd.path, leaseFile), ids); err != nil {
		return nil, err
	}
	unlock, err := s.storeLock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	have := map[string]bool{}
	for _, id := range ids {
		if _, err := s.readLayer(id); err == nil {
			have[id] = true
		}
	}
	return have, nil
}

func (s *Store) readLayer(diffID string) (*layerMeta, error) {
	var m layerMeta
	if err := readJSON(filepath.Join(s.layerDir(diffID), layerMetaFile), &m); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errorf(ErrNotFound, "layer %s not found", diffID)
		}
		return nil, err
	}
	return &m, nil
}

// storeLayer unpacks the i-th layer of li into the store. The uncompressed
// stream is hashed as it is unpacked (into a work directory, with the
// extractor's safety for hostile archives) and checked against the diff ID;
// then the OCI whiteouts become overlayfs ones, the tree is flushed and
// renamed into place. A failure leaves nothing of the layer.
func (s *Store) storeLayer(ctx context.Context, li *LayeredImage, i int, prog *layerProgress) error {
	l := li.Layers[i]
	what := fmt.Sprintf("layer %d of %d (%s)", i+1, len(li.Layers), layerLabel(l))
	wd, err := newWorkDir(s.tmpImages(), "layer-"+strings.TrimPrefix(l.DiffID, "sha256:")[:12]+"-")
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer wd.discard()
	tree, err := makeLayerTree(wd)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := unpackLayer(ctx, l, tree, func(n int64) { prog.add(i, n) }); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	sum, err := convertWhiteouts(ctx, tree)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	meta := layerMeta{DiffID: l.DiffID, Digest: l.Digest, BlobSize: l.Size, Size: sum.size, Files: sum.files,
		OpaqueRoot: sum.opaqueRoot, Created: time.Now().UTC()}
	if err := writeJSON(filepath.Join(wd.path, layerMetaFile), meta); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := syncTree(tree); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	final := s.layerDir(l.DiffID)
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	err = unix.Renameat2(unix.AT_FDCWD, wd.path, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	if err == unix.EEXIST || err == unix.ENOTEMPTY {
		slog.Info("rootfs: layer stored meanwhile by another import", "layer", l.DiffID)
	} else if err != nil {
		return fmt.Errorf("%s: store: %w", what, &os.PathError{Op: "rename", Path: final, Err: err})
	}
	syncDir(filepath.Dir(final))
	prog.end(i)
	return nil
}

// layeredMeta is the image record of li, its size the disk usage of its
// layers (each once).
func (s *Store) layeredMeta(li *LayeredImage, source string) (digestMeta, error) {
	m := digestMeta{Digest: li.Digest, Kind: ImageKindOCI, Source: source, Ref: li.Ref, Platform: li.Platform,
		Created: time.Now().UTC()}
	cfg := li.Config
	m.Config = &cfg
	for _, l := range li.Layers {
		m.Layers = append(m.Layers, layerRef{DiffID: l.DiffID, Digest: l.Digest, Size: l.Size})
	}
	for _, id := range uniqueLayers(m.layerIDs()) {
		lm, err := s.readLayer(id)
		if err != nil {
			return m, err
		}
		m.Size += lm.Size
		m.Files += lm.Files
	}
	return m, nil
}

func (m *digestMeta) layerIDs() []string {
	ids := make([]string, len(m.Layers))
	for i, l := range m.Layers {
		ids[i] = l.DiffID
	}
	return ids
}

// commitImage writes the record of a layered image into the import's work
// directory, renames that into place under the manifest digest (unless the
// digest is stored already) and moves the name to it: the same steps, under
// the same lock, as a tree's import. The lease goes just before the rename;
// the exclusive store lock keeps a prune out until the record is in place.
func (s *Store) commitImage(name string, wd *workDir, meta digestMeta, specHash string, rep *reporter) (*Image, error) {
	if err := writeJSON(filepath.Join(wd.path, "image.json"), meta); err != nil {
		return nil, err
	}
	rep.start("commit", 0)
	unlock, err := s.storeLock(true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	for _, id := range meta.layerIDs() {
		if _, err := os.Stat(s.layerTree(id)); err != nil {
			return nil, fmt.Errorf("layer %s vanished from the store: %w", id, err)
		}
	}
	if err := os.Remove(filepath.Join(wd.path, leaseFile)); err != nil {
		return nil, err
	}
	final := s.digestDir(meta.Digest)
	if err := unix.Renameat2(unix.AT_FDCWD, wd.path, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE); err != nil {
		if err != unix.EEXIST && err != unix.ENOTEMPTY {
			return nil, fmt.Errorf("store %s: %w", final, err)
		}
		slog.Info("rootfs: image already stored", "image", name, "digest", meta.Digest)
	}
	syncDir(filepath.Dir(final))
	ref := nameRef{Name: name, Digest: meta.Digest, Source: meta.Source, SpecHash: specHash, Created: meta.Created}
	if err := s.moveName(ref); err != nil {
		return nil, err
	}
	rep.finish(0)
	return s.Image(name)
}
