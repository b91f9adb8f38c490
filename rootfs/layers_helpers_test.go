package rootfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// stackSource is a Layered source made of tar streams the test builds: no
// registry. Each layer is served gzipped, as a registry serves it, and its
// compressed bytes are counted as a real source counts them.
type stackSource struct {
	ref    string
	layers []stackLayer
	config ImageConfig
	opened atomic.Int32 // Layer.Open calls
	// resolve, when set, is Resolve.
	resolve func() (*LayeredImage, error)
}

type stackLayer struct {
	tar    []byte
	diffID string // "": the tar's own sha256 (a wrong one tests the check)
}

func newStack(ref string, tars ...[]byte) *stackSource {
	s := &stackSource{ref: ref, config: ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}}
	for _, t := range tars {
		s.layers = append(s.layers, stackLayer{tar: t})
	}
	return s
}

func (s *stackSource) String() string { return "stack:" + s.ref }
func (s *stackSource) check() error   { return nil }
func (s *stackSource) build(context.Context, string, *reporter) error {
	return errors.New("a layered source is imported by its layers")
}

func sha256Of(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// Resolve describes the stack; its "manifest digest" is the hash of the ref
// and the diff IDs, so two stacks of other layers are other images.
func (s *stackSource) Resolve(ctx context.Context) (*LayeredImage, error) {
	if s.resolve != nil {
		return s.resolve()
	}
	li := &LayeredImage{Ref: s.ref, Platform: "linux/amd64", Config: s.config}
	manifest := s.ref
	for _, l := range s.layers {
		blob := gzipped(l.tar)
		diff := l.diffID
		if diff == "" {
			diff = sha256Of(l.tar)
		}
		manifest += "\n" + diff
		li.Layers = append(li.Layers, Layer{DiffID: diff, Digest: sha256Of(blob), Size: int64(len(blob)),
			Open: func(ctx context.Context, count func(int64)) (io.ReadCloser, error) {
				s.opened.Add(1)
				return gzip.NewReader(&countingReader{r: bytes.NewReader(blob), count: count})
			}})
	}
	li.Digest = sha256Of([]byte(manifest))
	return li, nil
}

type countingReader struct {
	r     io.Reader
	count func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.count != nil && n > 0 {
		c.count(int64(n))
	}
	return n, err
}

// whiteout and opaque are OCI whiteout entries.
func whiteout(dir, name string) ent { return file(filepath.Join(dir, ".wh."+name), "") }
func opaque(dir string) ent         { return file(filepath.Join(dir, ".wh..wh..opq"), "") }

// baseLayer is a small root: files, a setuid binary, hard and symbolic
// links, an xattr, and what the upper layers change.
func baseLayer(t testing.TB) []byte {
	tool := file("usr/bin/tool", "#!/bin/sh\necho tool\n")
	tool.mode = 0o755
	su := file("usr/bin/su", "su")
	su.mode = 0o4755
	keep := file("etc/keep", "keep")
	keep.xattrs = map[string]string{"user.berth": "kept"}
	home := dir("home/u")
	home.uid, home.gid = 1000, 1000
	return makeTar(t, dir("etc"), file("etc/os-release", "NAME=stack\n"), keep,
		file("etc/gone", "gone"), dir("etc/opq"), file("etc/opq/a", "a"), dir("etc/opq/sub"), file("etc/opq/sub/c", "c"),
		file("etc/changed", "v1"), file("etc/filetodir", "file"), dir("opt/d"), file("opt/d/f", "f"),
		dir("usr/bin"), tool, hardlink("usr/bin/tool2", "usr/bin/tool"), su, symlink("bin", "usr/bin"),
		dir("var/gonedir"), file("var/gonedir/x", "x"), home, file("home/u/f", "mine"))
}

// changeLayer whites out a file and a directory, makes etc/opq opaque with a
// new file, changes a file, turns a file into a directory and a directory
// into a file, and adds a file.
func changeLayer(t testing.TB) []byte {
	return makeTar(t, whiteout("etc", "gone"), dir("etc/opq"), opaque("etc/opq"), file("etc/opq/new", "new"),
		file("etc/changed", "v2"), dir("etc/filetodir"), file("etc/filetodir/inner", "inner"),
		file("opt/d", "now a file"), whiteout("var", "gonedir"), whiteout("", "nothing-there"),
		file("usr/bin/added", "added"))
}

// topLayer brings a whited-out file back and whites out a file of the
// layer below.
func topLayer(t testing.TB) []byte {
	return makeTar(t, file("etc/gone", "back"), whiteout("usr/bin", "added"))
}

// wantMerged is what the three layers show merged: path → type and content.
var wantMerged = map[string]string{
	"etc": "d", "etc/os-release": "f NAME=stack\n", "etc/keep": "f keep", "etc/gone": "f back",
	"etc/opq": "d", "etc/opq/new": "f new", "etc/changed": "f v2",
	"etc/filetodir": "d", "etc/filetodir/inner": "f inner", "opt": "d", "opt/d": "f now a file",
	"usr": "d", "usr/bin": "d", "usr/bin/tool": "f #!/bin/sh\necho tool\n", "usr/bin/tool2": "f #!/bin/sh\necho tool\n",
	"usr/bin/su": "f su", "bin": "l usr/bin", "var": "d", "home": "d", "home/u": "d", "home/u/f": "f mine",
}

// listScript prints every file under $R: path, type, mode, owner, and for
// files and links their size and content or target. Directory sizes and
// times are left out: overlayfs reports its own.
const listScript = `cd "$R"; find . -mindepth 1 \( -type d -printf '%p d %m %U:%G\n' \) -o \( -type l -printf '%p l %m %U:%G %l\n' \) \
  -o \( -type f -printf '%p f %m %U:%G %s\n' \) -o -printf '%p %y %m %U:%G\n' | LC_ALL=C sort
find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum; stat -c '. %a %u:%g' .`

// listDir runs listScript on a plain directory.
func listDir(t testing.TB, dir string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", "R=$1; "+listScript, "sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("list %s: %v\n%s", dir, err, out)
	}
	return string(out)
}

// checkMerged checks a listing of the merged view against wantMerged.
func checkMerged(t testing.TB, dir string) {
	t.Helper()
	got := map[string]bool{}
	for rel, want := range wantMerged {
		got[rel] = true
		p := filepath.Join(dir, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		switch typ, body, _ := strings.Cut(want, " "); typ {
		case "d":
			if !fi.IsDir() {
				t.Errorf("%s is %v, want a directory", rel, fi.Mode())
			}
		case "l":
			if l, _ := os.Readlink(p); l != body {
				t.Errorf("%s links to %q, want %q", rel, l, body)
			}
		case "f":
			if b, _ := os.ReadFile(p); !fi.Mode().IsRegular() || string(b) != body {
				t.Errorf("%s is %v %q, want a file %q", rel, fi.Mode(), b, body)
			}
		}
	}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if rel, _ := filepath.Rel(dir, p); err == nil && rel != "." && !got[rel] {
			t.Errorf("the merged view has %s, which it should not", rel)
		}
		return nil
	})
}

// stackTar archives a directory tree with GNU tar, as an image builder would.
func stackTar(t testing.TB, dir string) []byte {
	t.Helper()
	out, err := exec.Command("tar", "--format=posix", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", dir, "-c", ".").Output()
	if err != nil {
		t.Fatalf("tar %s: %v", dir, err)
	}
	return out
}

// storeLeftovers lists what an import left in the store's work area.
func storeLeftovers(t testing.TB, s *Store) []string {
	t.Helper()
	ents, err := os.ReadDir(s.tmpImages())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".reflink-probe-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func storedLayers(t testing.TB, s *Store) []string {
	t.Helper()
	ents, err := os.ReadDir(s.layersDir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, "sha256:"+e.Name())
	}
	return out
}

// Test hooks for the external test package (layers_boot_test.go).
var (
	NewStackForTest                                       = func(ref string, tars ...[]byte) Source { return newStack(ref, tars...) }
	StackTarForTest                                       = stackTar
	BaseLayerForTest, ChangeLayerForTest, TopLayerForTest = baseLayer, changeLayer, topLayer
	MakeFileTarForTest                                    = func(t testing.TB, name, body string) []byte { return makeTar(t, file(name, body)) }
	WhiteoutTarForTest                                    = func(t testing.TB, dir, name string) []byte { return makeTar(t, whiteout(dir, name)) }
)

// OpaqueTarForTest is a layer that makes dir opaque with one file, name.
var OpaqueTarForTest = func(t testing.TB, d, name string) []byte {
	return makeTar(t, dir(d), opaque(d), file(filepath.Join(d, name), name))
}
