package rootfs

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/berthd/berth/internal/fsutil"
)

// Writing an image as an OCI image layout (image-spec image-layout.md): what
// `skopeo copy … oci:DIR:REF` writes and skopeo, umoci, podman and berth's
// own OCILayout source read.
//
//	DIR/oci-layout             {"imageLayoutVersion": "1.0.0"}
//	DIR/index.json             the images, each named by its
//	                           org.opencontainers.image.ref.name annotation
//	DIR/blobs/sha256/HEX       manifests, configs and gzip layers by digest
//
// An OCI image's layers are written as they are stored: each unpacked layer is
// a tar again, its overlayfs whiteouts (0:0 character devices) turned back
// into .wh.NAME entries and its opaque directories (trusted.overlay.opaque)
// into DIR/.wh..wh..opq. A tree image is one layer of the whole tree.
//
// The layer tars are canonical: berth's tar export's entries, order and PAX
// records, a whiteout with its directory's mtime, gzip without a name or a
// time. The same stored layer always makes the same bytes, so an image
// imported from such a layout exports again to the same diff IDs, blobs and
// manifest digest. A layer pulled from elsewhere gets a new diff ID on its
// first export (its tar was another program's), with the same files.

// OCIExportOptions tune ExportOCI.
type OCIExportOptions struct {
	// RefName is the image's org.opencontainers.image.ref.name in
	// index.json (skopeo's oci:DIR:REF); "" is the image's name. An image
	// of that ref name already in the layout is replaced.
	RefName string
}

// OCIExport is what ExportOCI wrote.
type OCIExport struct {
	Dir      string `json:"dir"`
	RefName  string `json:"refName"`
	Digest   string `json:"digest"` // the manifest's
	Platform string `json:"platform"`
	// Layers, lowest first: their diff IDs and gzip blobs.
	Layers []ExportedLayer `json:"layers"`
	// Size is the bytes of the manifest, the config and the layers.
	Size int64 `json:"size"`
}

// ExportedLayer is one layer ExportOCI wrote.
type ExportedLayer struct {
	DiffID string `json:"diffID"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// ExportOCI writes the image name into the OCI image layout at dir: a new
// directory, an empty one, or a layout already, which keeps its other images
// and blobs. Blobs are written beside their place and renamed into it, and
// index.json is replaced last, so an interrupted export leaves the layout as
// it was (plus, at worst, blobs nothing names).
func (s *Store) ExportOCI(ctx context.Context, name, dir string, opts OCIExportOptions) (*OCIExport, error) {
	img, err := s.Image(name)
	if err != nil {
		return nil, err
	}
	out := &OCIExport{Dir: dir, RefName: opts.RefName, Platform: exportPlatform(img)}
	if out.RefName == "" {
		out.RefName = img.Name
	}
	if out.RefName == "" {
		return nil, errorf(ErrInvalid, "export image %s: content without a name: give the layout's ref name", name)
	}
	if err := checkRefName(out.RefName); err != nil {
		return nil, err
	}
	what := fmt.Sprintf("export image %q to the OCI layout %s", name, dir)
	if err := initLayout(dir); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	trees := []string{img.Path}
	if img.Kind == ImageKindOCI {
		wd, err := s.leaseExport(img)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		defer wd.discard()
		trees = trees[:0]
		for _, l := range img.Layers {
			trees = append(trees, l.Path)
		}
	}
	rep := newReporter(progressFrom(ctx))
	if err := writeLayers(ctx, dir, img, trees, out, rep); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := writeImage(dir, img, out); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// refNameRE is the image spec's grammar of a ref name: components of
// letters and digits joined by one of -._:@/+ (or --).
var refNameRE = regexp.MustCompile(`^[A-Za-z0-9]+(?:(?:[-._:@/+]|--)[A-Za-z0-9]+)*$`)

func checkRefName(ref string) error {
	if !refNameRE.MatchString(ref) {
		return errorf(ErrInvalid, "ref name %q: use letters and digits joined by - . _ : @ / or + (debian, v1.2, bookworm-slim)", ref)
	}
	return nil
}

// exportPlatform is the os/architecture[/variant] a layout says the image is
// for: an OCI image's own, a tree's the host's (what it was built on).
func exportPlatform(img *Image) string {
	if img.Kind == ImageKindOCI && img.Platform != "" {
		return img.Platform
	}
	return hostPlatform().String()
}

// initLayout makes dir an OCI image layout unless it is one: it must be
// missing or empty then, so that nothing else is mixed into it.
func initLayout(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, ocispec.ImageLayoutFile))
	switch {
	case err == nil:
		var l ocispec.ImageLayout
		if err := json.Unmarshal(b, &l); err != nil || l.Version != ocispec.ImageLayoutVersion {
			return errorf(ErrUnsupported, "%s is an OCI image layout of version %q: berth writes version %s", dir, l.Version, ocispec.ImageLayoutVersion)
		}
		return os.MkdirAll(filepath.Join(dir, ocispec.ImageBlobsDir, "sha256"), 0o755)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return errorf(ErrExists, "%s is neither empty nor an OCI image layout (no oci-layout file): give a new directory", dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, ocispec.ImageBlobsDir, "sha256"), 0o755); err != nil {
		return err
	}
	b, _ = json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	return fsutil.WriteFileAtomic(filepath.Join(dir, ocispec.ImageLayoutFile), b, 0o644)
}

// writeLayers writes a gzip layer blob of each tree (lowest first; a layer the
// image lists twice once) into out.Layers.
func writeLayers(ctx context.Context, dir string, img *Image, trees []string, out *OCIExport, rep *reporter) error {
	written := map[string]ExportedLayer{}
	for i, tree := range trees {
		size, key := img.Size, tree
		if img.Kind == ImageKindOCI {
			size, key = img.Layers[i].Size, img.Layers[i].DiffID
		}
		if l, ok := written[key]; ok {
			out.Layers = append(out.Layers, l)
			continue
		}
		rep.start(fmt.Sprintf("layer %d/%d", i+1, len(trees)), size)
		l, err := writeLayerBlob(ctx, dir, tree, img.Kind == ImageKindOCI, rep)
		if err != nil {
			return fmt.Errorf("layer %d of %d: %w", i+1, len(trees), err)
		}
		written[key] = l
		out.Layers = append(out.Layers, l)
		out.Size += l.Size
	}
	return nil
}

// writeLayerBlob writes the tree as a gzip layer into dir's blobs and returns
// its diff ID (the tar's sha256) and its digest and size (the blob's). layer
// says the tree is an unpacked layer, whose whiteouts go back to OCI ones.
func writeLayerBlob(ctx context.Context, dir, tree string, layer bool, rep *reporter) (ExportedLayer, error) {
	blobs := filepath.Join(dir, ocispec.ImageBlobsDir, "sha256")
	f, err := os.CreateTemp(blobs, ".layer.tmp-*")
	if err != nil {
		return ExportedLayer{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	blob := &hashCounter{h: sha256.New()}
	bw := bufio.NewWriterSize(io.MultiWriter(f, blob), 1<<20)
	zw := gzip.NewWriter(bw)
	diff := &hashCounter{h: sha256.New()}
	x := newExporter(io.MultiWriter(zw, diff), rep, layer)
	if err := walkTree(ctx, tree, x.entry, nil); err != nil {
		return ExportedLayer{}, err
	}
	for _, c := range []io.Closer{x.tw, zw} {
		if err := c.Close(); err != nil {
			return ExportedLayer{}, err
		}
	}
	if err := bw.Flush(); err != nil {
		return ExportedLayer{}, err
	}
	if err := f.Chmod(0o644); err != nil {
		return ExportedLayer{}, err
	}
	if err := f.Sync(); err != nil {
		return ExportedLayer{}, err
	}
	if err := f.Close(); err != nil {
		return ExportedLayer{}, err
	}
	l := ExportedLayer{DiffID: diff.digest(), Digest: blob.digest(), Size: blob.n}
	if err := os.Rename(f.Name(), filepath.Join(blobs, strings.TrimPrefix(l.Digest, "sha256:"))); err != nil {
		return ExportedLayer{}, err
	}
	x.rep.finish(x.done)
	return l, nil
}

// writeImage writes the config and the manifest of the layers in out, and
// names the manifest in index.json.
func writeImage(dir string, img *Image, out *OCIExport) error {
	p, err := parsePlatform(out.Platform)
	if err != nil {
		return err
	}
	cfg := ocispec.Image{
		Platform: ocispec.Platform{OS: p.os, Architecture: p.arch, Variant: p.variant},
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	if c := img.Config; c != nil {
		cfg.Config = ocispec.ImageConfig{User: c.User, Env: c.Env, Entrypoint: c.Entrypoint, Cmd: c.Cmd,
			WorkingDir: c.WorkingDir, Labels: c.Labels, StopSignal: c.StopSignal}
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest}
	for _, l := range out.Layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.Digest(l.DiffID))
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.Digest(l.Digest), Size: l.Size})
	}
	if m.Config, err = writeJSONBlob(dir, ocispec.MediaTypeImageConfig, cfg); err != nil {
		return err
	}
	desc, err := writeJSONBlob(dir, ocispec.MediaTypeImageManifest, m)
	if err != nil {
		return err
	}
	out.Digest = desc.Digest.String()
	out.Size += m.Config.Size + desc.Size
	desc.Platform = &cfg.Platform
	desc.Annotations = map[string]string{ocispec.AnnotationRefName: out.RefName}
	return addToIndex(dir, desc)
}

// writeJSONBlob writes v as a blob of media type mt and returns its
// descriptor.
func writeJSONBlob(dir, mt string, v any) (ocispec.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d := digest.FromBytes(b)
	p := filepath.Join(dir, ocispec.ImageBlobsDir, "sha256", d.Encoded())
	if err := fsutil.WriteFileAtomic(p, b, 0o644); err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}, nil
}

// addToIndex names desc in dir's index.json, in place of an image of the same
// ref name.
func addToIndex(dir string, desc ocispec.Descriptor) error {
	p := filepath.Join(dir, ocispec.ImageIndexFile)
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &idx); err != nil {
			return errorf(ErrInvalid, "%s: %v", p, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	ref := desc.Annotations[ocispec.AnnotationRefName]
	kept := []ocispec.Descriptor{}
	for _, d := range idx.Manifests {
		if d.Annotations[ocispec.AnnotationRefName] != ref {
			kept = append(kept, d)
		}
	}
	idx.Manifests = append(kept, desc)
	if b, err = json.Marshal(idx); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(p, b, 0o644)
}

// whiteout writes the overlayfs whiteout n as the OCI one, DIR/.wh.NAME: an
// empty file owned by root, with its directory's mtime (the device's own is
// when the layer was unpacked, which would make every export differ).
func (x *exporter) whiteout(n *node) error {
	var st unix.Stat_t
	if err := unix.Fstat(n.parent, &st); err != nil {
		return &os.PathError{Op: "stat", Path: parentRel(n.rel), Err: err}
	}
	return x.marker(joinRel(parentRel(n.rel), whiteoutPrefix+n.name), st.Mtim)
}

// opaque writes the marker of the opaque directory n, whose header was just
// written: DIR/.wh..wh..opq, right after the directory.
func (x *exporter) opaque(n *node) error {
	return x.marker(joinRel(n.rel, whiteoutOpaque), n.st.Mtim)
}

func (x *exporter) marker(rel string, mtime unix.Timespec) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "./" + rel, Mode: 0o644,
		ModTime: time.Unix(mtime.Sec, mtime.Nsec), Format: tar.FormatPAX}
	if err := x.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	return nil
}

// hashCounter hashes and counts what is written to it.
type hashCounter struct {
	h hash.Hash
	n int64
}

func (c *hashCounter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

func (c *hashCounter) digest() string { return "sha256:" + hex.EncodeToString(c.h.Sum(nil)) }
