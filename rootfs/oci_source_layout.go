package rootfs

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// The annotations that name an image in a layout's index.json: the OCI
// image spec's, which skopeo and umoci write (a tag, or a whole reference),
// and containerd's (`ctr image export`), the whole reference.
const (
	refNameAnnotation    = "org.opencontainers.image.ref.name"
	containerdAnnotation = "io.containerd.image.name"
)

// Resolve reads the layout's index.json, the image Ref names (for an index,
// the platform's) and its config. Every manifest and config is checked
// against the digest it is named by; the layers are checked as they are read.
func (o OCILayout) Resolve(ctx context.Context) (*LayeredImage, error) {
	ref := o.ref()
	want, err := parsePlatform(o.Platform)
	if err != nil {
		return nil, err
	}
	p, err := layout.FromPath(o.Path)
	if err != nil {
		return nil, errorf(ErrInvalid, "%s: not an OCI image layout: %w", ref, err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("%s: index.json: %w", ref, err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		return nil, errorf(ErrInvalid, "%s: index.json: %w", ref, err)
	}
	desc, err := o.pick(im)
	if err != nil {
		return nil, err
	}
	idx := top
	if desc.MediaType.IsIndex() {
		if idx, err = top.ImageIndex(desc.Digest); err != nil {
			return nil, fmt.Errorf("%s: index %s: %w", ref, desc.Digest, err)
		}
		if d, err := idx.Digest(); err != nil || d != desc.Digest {
			return nil, errorf(ErrInvalid, "%s: index digest mismatch: it is %s, not the %s it is named by: the layout is corrupt", ref, d, desc.Digest)
		}
		if im, err = idx.IndexManifest(); err != nil {
			return nil, errorf(ErrInvalid, "%s: index %s: %w", ref, desc.Digest, err)
		}
		if desc, err = choosePlatform(ref, im, want); err != nil {
			return nil, err
		}
	}
	if !desc.MediaType.IsImage() {
		return nil, unsupportedManifest(ref, desc.MediaType)
	}
	img, err := idx.Image(desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", ref, desc.Digest, err)
	}
	li, err := describe(ref, img, desc.Digest, want, func(h v1.Hash) blobOpener {
		return func(context.Context) (io.ReadCloser, error) { return p.Blob(h) }
	})
	if err == nil && desc.Platform != nil {
		li.Platform = fromV1(desc.Platform).String() // the index's word, variant and all
	}
	return li, err
}

// pick is the entry of index.json that Ref names, or its only one.
func (o OCILayout) pick(im *v1.IndexManifest) (v1.Descriptor, error) {
	var refs []string
	for _, d := range im.Manifests {
		n := d.Annotations[refNameAnnotation]
		if n != "" {
			refs = append(refs, n)
		}
		if o.Ref != "" && (n == o.Ref || d.Annotations[containerdAnnotation] == o.Ref) {
			return d, nil
		}
	}
	slices.Sort(refs)
	list := "none"
	if len(refs) > 0 {
		list = strings.Join(slices.Compact(refs), ", ")
	}
	switch {
	case len(im.Manifests) == 0:
		return v1.Descriptor{}, errorf(ErrInvalid, "%s: the layout holds no image", o.ref())
	case o.Ref != "":
		return v1.Descriptor{}, errorf(ErrInvalid, "%s: the layout has no image named %q; its refs: %s", o.ref(), o.Ref, list)
	case len(im.Manifests) > 1:
		return v1.Descriptor{}, errorf(ErrInvalid, "%s: the layout holds %d images: name one by its ref (%s)", o.ref(), len(im.Manifests), list)
	}
	return im.Manifests[0], nil
}
