package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// writeArchive writes a docker archive with ggcr's tarball package, each
// image under its tag.
func writeArchive(t *testing.T, images map[string]v1.Image) string {
	t.Helper()
	refs := map[name.Reference]v1.Image{}
	for tag, img := range images {
		r, err := name.NewTag(tag)
		if err != nil {
			t.Fatal(err)
		}
		refs[r] = img
	}
	p := filepath.Join(t.TempDir(), "image.tar")
	if err := tarball.MultiRefWriteToFile(p, refs); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDockerArchive resolves the images of a docker archive by tag, and the
// only one without a tag; tags it does not have are errors listing those
// it has.
func TestDockerArchive(t *testing.T) {
	img := testImage(t, hostPlat, threeLayers(t)...)
	other := testImage(t, hostPlat, tarLayer(t, compression.GZip, file("other", "x")))
	p := writeArchive(t, map[string]v1.Image{"test/three:v1": img, "registry.example.org/other:2": other})

	li, err := DockerArchive{Path: p, Ref: "test/three:v1"}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigName()
	if li.Ref != "docker-archive:"+p+":test/three:v1" || li.Digest != cfg.String() || li.Platform != hostPlat {
		t.Errorf("ref %s digest %s platform %s, want the config's digest %s", li.Ref, li.Digest, li.Platform, cfg)
	}
	checkLayers(t, li, img, false)
	// docker.io/ spelled out or not is the same tag.
	if _, err := (DockerArchive{Path: p, Ref: "docker.io/test/three:v1"}).Resolve(context.Background()); err != nil {
		t.Error(err)
	}

	_, err = DockerArchive{Path: p}.Resolve(context.Background())
	wantErr(t, err, "docker-archive:"+p, "holds 2 images: name one by its tag", "test/three:v1", "registry.example.org/other:2")
	_, err = DockerArchive{Path: p, Ref: "test/three:v2"}.Resolve(context.Background())
	wantErr(t, err, "no image tagged test/three:v2; its tags:")

	one := writeArchive(t, map[string]v1.Image{"other:1": other})
	li, err = DockerArchive{Path: one}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkLayers(t, li, other, false)

	wantErr(t, DockerArchive{Path: "x.tar"}.check(), "not an absolute path")
	wantErr(t, DockerArchive{Path: t.TempDir()}.check(), "is a directory")
	wantErr(t, DockerArchive{Path: p, Ref: "Bad Tag"}.check(), "is not an image tag")
	notTar := filepath.Join(t.TempDir(), "x.tar")
	os.WriteFile(notTar, []byte(strings.Repeat("x", 2000)), 0o644)
	_, err = DockerArchive{Path: notTar}.Resolve(context.Background())
	wantErr(t, err, "not a docker archive")
}

// writeLegacyArchive writes what docker save wrote before docker 25: a
// directory per layer with an uncompressed layer.tar, the second image's
// shared layer as a symbolic link to the first's, and a repositories file.
func writeLegacyArchive(t *testing.T, corrupt bool) (string, []string) {
	t.Helper()
	l1 := makeTar(t, dir("etc/"), file("etc/os-release", "ID=legacy\n"))
	l2 := makeTar(t, file("hello", "world\n"))
	diff := func(b []byte) string { return sha256Hash(b).String() }
	cfg, _ := json.Marshal(v1.ConfigFile{OS: "linux", Architecture: strings.TrimPrefix(hostPlat, "linux/"), Config: testConfig,
		RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{sha256Hash(l1), sha256Hash(l2)}}})
	cfgName := sha256Hash(cfg).Hex + ".json"
	man, _ := json.Marshal(tarball.Manifest{{Config: cfgName, RepoTags: []string{"legacy:1"}, Layers: []string{"aaa/layer.tar", "bbb/layer.tar"}}})
	if corrupt {
		l2 = bytes.Replace(l2, []byte("world\n"), []byte("World\n"), 1)
	}
	p := filepath.Join(t.TempDir(), "legacy.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	add := func(h *tar.Header, b []byte) {
		h.Size = int64(len(b))
		if h.Typeflag == 0 {
			h.Typeflag, h.Mode = tar.TypeReg, 0o644
		}
		tw.WriteHeader(h)
		tw.Write(b)
	}
	add(&tar.Header{Name: "aaa/layer.tar"}, l1)
	add(&tar.Header{Name: "ccc/layer.tar"}, l2)
	add(&tar.Header{Name: "bbb/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../ccc/layer.tar"}, nil)
	add(&tar.Header{Name: cfgName}, cfg)
	add(&tar.Header{Name: "manifest.json"}, man)
	add(&tar.Header{Name: "repositories"}, []byte(`{"legacy":{"1":"bbb"}}`))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p, []string{diff(l1), diff(l2)}
}

// TestDockerArchiveLegacy reads an archive of uncompressed layers, one of
// them through a link; a changed byte in one is a digest mismatch naming it.
func TestDockerArchiveLegacy(t *testing.T) {
	p, diffIDs := writeLegacyArchive(t, false)
	li, err := DockerArchive{Path: p, Ref: "legacy:1"}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(li.Layers) != 2 {
		t.Fatalf("%d layers", len(li.Layers))
	}
	for i, l := range li.Layers {
		if l.DiffID != diffIDs[i] || l.Digest != diffIDs[i] {
			t.Errorf("layer %d: diff ID %s digest %s, want %s", i, l.DiffID, l.Digest, diffIDs[i])
		}
		names, n, err := readLayer(t, l)
		if err != nil || n != l.Size || len(names) == 0 {
			t.Errorf("layer %d: %q, %d of %d bytes: %v", i, names, n, l.Size, err)
		}
	}
	checkConfig(t, li.Config)

	p, _ = writeLegacyArchive(t, true)
	li, err = DockerArchive{Path: p}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = readLayer(t, li.Layers[1])
	wantErr(t, err, "docker-archive:"+p+": layer 2/2 "+diffIDs[1], "digest mismatch")
}
