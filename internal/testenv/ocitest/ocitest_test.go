package ocitest

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestSplitTree: a tree split in two layers keeps each entry in one of them,
// links as links, and a hard link as one within its layer; the image of
// them and a small layer comes back from the registry as pushed.
func TestSplitTree(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "usr/bin/sh"), []byte("#!shell\n"), 0o755))
	must(os.Link(filepath.Join(root, "usr/bin/sh"), filepath.Join(root, "usr/bin/ash")))
	must(os.Symlink("usr/bin", filepath.Join(root, "bin")))
	must(os.WriteFile(filepath.Join(root, "etc/motd"), []byte("hi\n"), 0o644))

	for _, comp := range []compression.Compression{compression.GZip, compression.ZStd} {
		usr, rest, err := SplitTree(t.TempDir(), root, comp)
		must(err)
		want := [][]string{{"usr/ 5", "usr/bin/ 5", "usr/bin/ash 0", "usr/bin/sh 1"}, {"bin 2", "etc/ 5", "etc/motd 0"}}
		for i, l := range []v1.Layer{usr, rest} {
			if got := members(t, l); !slices.Equal(got, want[i]) {
				t.Errorf("%s layer %d: %q, want %q", comp, i, got, want[i])
			}
		}
		top, err := Layer(comp, Dir("etc"), Whiteout("etc", "motd"), Opaque("usr/bin"), File("usr/bin/new", "x"))
		must(err)
		img, err := Image(v1.Config{Env: []string{"A=1"}}, usr, rest, top)
		must(err)
		reg, err := NewRegistry()
		must(err)
		digest, err := reg.Push("tree:1", img)
		must(err)
		ref, err := name.ParseReference(reg.Host+"/tree@"+digest.String(), name.Insecure)
		must(err)
		got, err := remote.Image(ref)
		must(err)
		if ls, _ := got.Layers(); len(ls) != 3 {
			t.Errorf("%d layers pulled", len(ls))
		}
		reg.Close()
	}
}

// members are a layer's entries as "NAME TYPEFLAG".
func members(t *testing.T, l v1.Layer) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name+" "+string(rune(h.Typeflag)))
	}
}
