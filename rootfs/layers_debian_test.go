package rootfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/klauspost/compress/zstd"
)

// fileStack is a Layered source whose layers are zstd files on disk, for
// an image too big to hold in memory.
type fileStack struct {
	ref    string
	layers []Layer
}

func (f *fileStack) String() string { return "files:" + f.ref }
func (f *fileStack) check() error   { return nil }
func (f *fileStack) build(context.Context, string, *reporter) error {
	return errors.New("a layered source is imported by its layers")
}

func (f *fileStack) Resolve(context.Context) (*LayeredImage, error) {
	manifest := f.ref
	for _, l := range f.layers {
		manifest += "\n" + l.DiffID
	}
	return &LayeredImage{Ref: f.ref, Digest: sha256Of([]byte(manifest)), Platform: "linux/amd64", Layers: f.layers}, nil
}

// zstdLayer describes the .tar.zst at p as a layer: its diff ID is the hash
// of the tar inside.
func zstdLayer(t testing.TB, p string) Layer {
	t.Helper()
	open := func(ctx context.Context, count func(int64)) (io.ReadCloser, error) {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		zr, err := zstd.NewReader(&countingReader{r: f, count: count})
		if err != nil {
			f.Close()
			return nil, err
		}
		return readCloser{zr.IOReadCloser(), f}, nil
	}
	rc, err := open(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := os.ReadFile(p)
	return Layer{DiffID: "sha256:" + hex.EncodeToString(h.Sum(nil)), Digest: sha256Of(blob), Size: fi.Size(), Open: open}
}

type readCloser struct {
	io.ReadCloser
	f *os.File
}

func (r readCloser) Close() error { r.ReadCloser.Close(); return r.f.Close() }

// TestLayeredDebian imports the Debian 12 guest as the base of a three-layer
// image and times it against the tar import of the same archive, then makes
// machine roots: the first and a second overlay root (O(1)), and a flattened
// copy.
func TestLayeredDebian(t *testing.T) {
	_, archive := debianTar(t)
	ctx := ctxT(t)
	s := openStore(t)
	small := func(ents ...ent) Layer {
		p := filepath.Join(t.TempDir(), "layer.tar.zst")
		var buf bytes.Buffer
		zw, _ := zstd.NewWriter(&buf)
		zw.Write(makeTar(t, ents...))
		zw.Close()
		writeFile(t, p, buf.Bytes())
		return zstdLayer(t, p)
	}
	src := &fileStack{ref: "test.example/debian:layers", layers: []Layer{zstdLayer(t, archive),
		small(whiteout("etc", "motd"), dir("etc/apt/sources.list.d"), opaque("etc/apt/sources.list.d"), file("etc/added", "1")),
		small(file("etc/os-release", "PRETTY_NAME=\"berth layers\"\n"))}}
	start := time.Now()
	img, err := s.Import(ctx, "debian", src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unpack := time.Since(start)
	start = time.Now()
	if _, err := s.Import(ctx, "debian-tar", Tar{Location: archive}, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	tarImport := time.Since(start)
	t.Logf("layered import (%d MiB, %d files in 3 layers): %v; tar import of the same archive: %v",
		img.Size>>20, img.Files, unpack.Round(time.Millisecond), tarImport.Round(time.Millisecond))
	var took []time.Duration
	for _, m := range []string{"first", "second"} {
		start = time.Now()
		r, err := s.CreateRoot(ctx, m, "debian", StrategyAuto)
		if err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
		if r.Strategy != StrategyOverlay || len(r.Overlay.Lower) != 3 {
			t.Fatalf("root %+v", r.Overlay)
		}
	}
	start = time.Now()
	c, err := s.CreateRoot(ctx, "flat", "debian", StrategyCopy)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("overlay roots: first %v, second %v; flattened copy %v", took[0].Round(time.Microsecond), took[1].Round(time.Microsecond), time.Since(start).Round(time.Millisecond))
	if took[1] > 100*time.Millisecond {
		t.Errorf("a second overlay root took %v", took[1])
	}
	r, _ := s.Root("second")
	out := inOverlay(t, r, `test ! -e "$R/etc/motd"; test -z "$(ls -A "$R/etc/apt/sources.list.d")"; cat "$R/etc/os-release" "$R/etc/added"; test -x "$R/usr/lib/systemd/systemd"; echo ok`)
	if !strings.Contains(out, "berth layers") || !strings.HasSuffix(out, "1ok\n") {
		t.Errorf("merged view: %q", out)
	}
	if flat, merged := listDir(t, c.Dir), inOverlay(t, r, listScript); flat != merged {
		t.Errorf("the flattened copy and the overlay differ:\n%s", testenv.Diff(merged, flat))
	}
}
