package rootfs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// writeLayout writes an OCI image layout with ggcr's layout package: each
// image (a v1.Image or a v1.ImageIndex) under its ref name ("" for none).
func writeLayout(t *testing.T, images map[string]any) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for ref, img := range images {
		var opts []layout.Option
		if ref != "" {
			opts = append(opts, layout.WithAnnotations(map[string]string{refNameAnnotation: ref}))
		}
		switch x := img.(type) {
		case v1.Image:
			err = p.AppendImage(x, opts...)
		case v1.ImageIndex:
			err = p.AppendIndex(x, opts...)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func twoPlatforms(t *testing.T) (v1.ImageIndex, v1.Image, v1.Image) {
	amd := testImage(t, "linux/amd64", tarLayer(t, compression.GZip, file("amd64", "x")))
	arm := testImage(t, "linux/arm64", tarLayer(t, compression.GZip, file("arm64", "y")))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	return idx, amd, arm
}

// TestOCILayout resolves images of a layout by their ref names: one image,
// an index (by platform), and the errors that list the refs it has.
func TestOCILayout(t *testing.T) {
	img := testImage(t, hostPlat, threeLayers(t)...)
	idx, amd, arm := twoPlatforms(t)
	dir := writeLayout(t, map[string]any{"v1": img, "multi": idx})

	li, err := OCILayout{Path: dir, Ref: "v1"}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if li.Ref != "oci:"+dir+":v1" {
		t.Errorf("ref %s", li.Ref)
	}
	checkImage(t, li, img, hostPlat)

	li, err = OCILayout{Path: dir, Ref: "multi", Platform: "linux/arm64"}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, li, arm, "linux/arm64")
	li, err = OCILayout{Path: dir, Ref: "multi", Platform: "linux/amd64"}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, li, amd, "linux/amd64")
	_, err = OCILayout{Path: dir, Ref: "multi", Platform: "linux/ppc64le"}.Resolve(context.Background())
	wantErr(t, err, "oci:"+dir+":multi", "no image for linux/ppc64le, only for linux/amd64, linux/arm64")

	_, err = OCILayout{Path: dir}.Resolve(context.Background())
	wantErr(t, err, "oci:"+dir, "holds 2 images: name one by its ref (multi, v1)")
	_, err = OCILayout{Path: dir, Ref: "v2"}.Resolve(context.Background())
	wantErr(t, err, `no image named "v2"; its refs: multi, v1`)

	one := writeLayout(t, map[string]any{"": img})
	li, err = OCILayout{Path: one}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, li, img, hostPlat)

	wantErr(t, OCILayout{Path: "layout"}.check(), "not an absolute path")
	wantErr(t, OCILayout{Path: t.TempDir()}.check(), "not an OCI image layout")
	if err := (OCILayout{Path: dir, Ref: "v1"}).check(); err != nil {
		t.Error(err)
	}
}

// blobPath is where a layout keeps a blob.
func blobPath(dir, digest string) string {
	return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// TestOCILayoutCorrupt: a layer blob changed, cut short or missing fails its
// stream naming the layer; a manifest changed fails Resolve.
func TestOCILayoutCorrupt(t *testing.T) {
	img := testImage(t, hostPlat, threeLayers(t)...)
	dir := writeLayout(t, map[string]any{"v1": img})
	src := OCILayout{Path: dir, Ref: "v1"}
	li, err := src.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l := li.Layers[1]
	p := blobPath(dir, l.Digest)
	good, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	what := "oci:" + dir + ":v1: layer 2/3 " + l.Digest

	bad := append([]byte{}, good...)
	bad[len(bad)/2] ^= 0x55
	os.WriteFile(p, bad, 0o644)
	_, _, err = readLayer(t, l)
	wantErr(t, err, what, "digest mismatch")

	os.WriteFile(p, good[:len(good)-7], 0o644)
	_, _, err = readLayer(t, l)
	wantErr(t, err, what, "truncated")

	os.Remove(p)
	_, _, err = readLayer(t, l)
	wantErr(t, err, what, "no such file")
	os.WriteFile(p, good, 0o644)
	if _, _, err := readLayer(t, l); err != nil {
		t.Errorf("restored: %v", err)
	}

	mp := blobPath(dir, li.Digest)
	m, _ := os.ReadFile(mp)
	os.WriteFile(mp, append(m, ' '), 0o644)
	_, err = src.Resolve(context.Background())
	wantErr(t, err, "oci:"+dir+":v1", "manifest digest mismatch")
}
