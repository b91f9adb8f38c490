package rootfs

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// A docker archive is a tar of a manifest.json (ggcr's tarball.Manifest: per
// image its config file, its tags and its layer files), the configs and the
// layers (plain tars from docker save, gzip from some other writers). Docker
// 25 and later also write an OCI layout inside, and name every file by its
// digest (blobs/sha256/HEX).

// maxArchiveJSON bounds manifest.json and a config read from an archive.
const maxArchiveJSON = 64 << 20

var blobPathRE = regexp.MustCompile(`^blobs/sha256/([0-9a-f]{64})$`)

// Resolve reads the archive's manifest.json and the image's config. A docker
// archive has no image manifest of its own: the image's Digest is its
// config's (docker's image ID).
func (a DockerArchive) Resolve(ctx context.Context) (*LayeredImage, error) {
	ref := a.ref()
	want, err := parsePlatform(a.Platform)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(a.Path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	defer f.Close()
	head := make([]byte, 6)
	n, _ := f.ReadAt(head, 0)
	if c := sniff(head[:n]); c != CompressNone {
		return nil, errorf(ErrInvalid, "%s: the archive is compressed with %s: decompress it first (berth reads a docker archive in place)", ref, c)
	}
	files, err := indexTar(f)
	if err != nil {
		return nil, errorf(ErrInvalid, "%s: not a docker archive: %w", ref, err)
	}
	var m tarball.Manifest
	if err := files.readJSON(f, "manifest.json", &m); err != nil {
		return nil, errorf(ErrInvalid, "%s: not a docker archive: %w", ref, err)
	}
	d, err := a.pick(m)
	if err != nil {
		return nil, err
	}
	rawCfg, err := files.read(f, d.Config)
	if err != nil {
		return nil, errorf(ErrInvalid, "%s: config: %w", ref, err)
	}
	digest := sha256Hash(rawCfg)
	if mm := blobPathRE.FindStringSubmatch(d.Config); mm != nil && mm[1] != digest.Hex {
		return nil, errorf(ErrInvalid, "%s: config digest mismatch: %s hashes to %s: the archive is corrupt", ref, d.Config, digest)
	}
	li, diffIDs, err := fromConfig(ref, rawCfg, want, len(d.Layers))
	if err != nil {
		return nil, err
	}
	li.Digest = digest.String()
	for i, p := range d.Layers {
		l, err := a.layer(f, files, d, p, diffIDs[i], ociLayerName(i, len(d.Layers), diffIDs[i].String()))
		if err != nil {
			return nil, err
		}
		li.Layers = append(li.Layers, l)
	}
	return li, nil
}

// layer is the layer in file p of the archive, with diff ID diffID.
func (a DockerArchive) layer(f *os.File, files tarIndex, d *tarball.Descriptor, p string, diffID v1.Hash, what string) (Layer, error) {
	if src, ok := d.LayerSources[diffID]; ok && !slices.Contains(layerTypes, src.MediaType) {
		return Layer{}, errorf(ErrUnsupported, "%s: %s: media type %q is not a tar layer berth can unpack", a.ref(), what, src.MediaType)
	}
	e, err := files.lookup(p)
	if err != nil {
		return Layer{}, errorf(ErrInvalid, "%s: %s: %w", a.ref(), what, err)
	}
	// The blob's digest: named by the manifest or the file's name, or, for
	// a plain tar, its diff ID. A compressed layer of an older writer has
	// none to check it by but its diff ID, which the unpacker checks.
	var digest v1.Hash
	if src, ok := d.LayerSources[diffID]; ok {
		digest = src.Digest
	} else if mm := blobPathRE.FindStringSubmatch(p); mm != nil {
		digest = v1.Hash{Algorithm: "sha256", Hex: mm[1]}
	} else {
		head := make([]byte, 6)
		n, _ := f.ReadAt(head, e.offset)
		if sniff(head[:n]) == CompressNone {
			digest = diffID
		}
	}
	path := a.Path
	b := &layerBlob{ref: a.ref(), what: what, digest: digest, size: e.size, open: func(context.Context) (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.NewSectionReader(f, e.offset, e.size), f}, nil
	}}
	shown := diffID.String()
	if digest.Hex != "" {
		shown = digest.String()
	}
	return Layer{DiffID: diffID.String(), Digest: shown, Size: e.size, Open: b.Open}, nil
}

// pick is the image of manifest.json that Ref names, or its only one.
func (a DockerArchive) pick(m tarball.Manifest) (*tarball.Descriptor, error) {
	var tags []string
	var want name.Tag
	if a.Ref != "" {
		t, err := name.NewTag(a.Ref)
		if err != nil {
			return nil, errorf(ErrInvalid, "%s: %q is not an image tag: %v", a.ref(), a.Ref, err)
		}
		want = t
	}
	for i, d := range m {
		for _, s := range d.RepoTags {
			tags = append(tags, s)
			if t, err := name.NewTag(s); err == nil && a.Ref != "" && t.Name() == want.Name() {
				return &m[i], nil
			}
		}
	}
	list := "none"
	if len(tags) > 0 {
		list = strings.Join(tags, ", ")
	}
	switch {
	case len(m) == 0:
		return nil, errorf(ErrInvalid, "%s: the archive holds no image", a.ref())
	case a.Ref != "":
		return nil, errorf(ErrInvalid, "%s: the archive has no image tagged %s; its tags: %s", a.ref(), a.Ref, list)
	case len(m) > 1:
		return nil, errorf(ErrInvalid, "%s: the archive holds %d images: name one by its tag (%s)", a.ref(), len(m), list)
	}
	return &m[0], nil
}

// tarEntry is a file of an uncompressed tar: where its data is, or what it
// links to.
type tarEntry struct {
	offset, size int64
	link         string // the target's name, for a symbolic or hard link
}

// tarIndex is every file of a tar by its cleaned name.
type tarIndex map[string]tarEntry

// indexTar reads the headers of the tar f, seeking over the data.
func indexTar(f *os.File) (tarIndex, error) {
	idx := tarIndex{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return idx, nil
		}
		if err != nil {
			return nil, err
		}
		// tar.Reader reads whole blocks and no further: the file's offset is
		// where the entry's data begins.
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		n := path.Clean(strings.TrimPrefix(h.Name, "./"))
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			idx[n] = tarEntry{offset: off, size: h.Size}
		case tar.TypeSymlink:
			idx[n] = tarEntry{link: path.Join(path.Dir(n), h.Linkname)}
		case tar.TypeLink:
			idx[n] = tarEntry{link: path.Clean(strings.TrimPrefix(h.Linkname, "./"))}
		}
	}
}

// lookup finds a file, following links within the archive (docker save of
// old wrote a layer shared by two images once, and a link to it).
func (t tarIndex) lookup(p string) (tarEntry, error) {
	p = path.Clean(strings.TrimPrefix(p, "./"))
	for range 8 {
		e, ok := t[p]
		if !ok {
			return tarEntry{}, fmt.Errorf("%s is not in the archive", p)
		}
		if e.link == "" {
			return e, nil
		}
		p = e.link
	}
	return tarEntry{}, fmt.Errorf("%s: too many links", p)
}

// read is the content of a small file of the archive.
func (t tarIndex) read(f *os.File, p string) ([]byte, error) {
	e, err := t.lookup(p)
	if err != nil {
		return nil, err
	}
	if e.size > maxArchiveJSON {
		return nil, fmt.Errorf("%s is %d bytes, too large for what it should be", p, e.size)
	}
	b := make([]byte, e.size)
	if _, err := f.ReadAt(b, e.offset); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return b, nil
}

func (t tarIndex) readJSON(f *os.File, p string, v any) error {
	b, err := t.read(f, p)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}
