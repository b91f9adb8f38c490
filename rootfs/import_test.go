package rootfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// TestImportDebianTarball imports a real Debian 12 root filesystem archive made
// by GNU tar and checks that it unpacks to exactly the tree it was made from
// (same digest as importing the directory), then exports it and imports the
// export: the digest survives the round trip.
func TestImportDebianTarball(t *testing.T) {
	tree, archive := debianTar(t)
	ctx := ctxT(t)
	s := openStore(t)
	var phases sync.Map
	start := time.Now()
	fromTar, err := s.Import(ctx, "deb-tar", Tar{Location: archive}, ImportOptions{Progress: func(p Progress) { phases.Store(p.Phase, true) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("imported %s (%d MB, %d files) from the tarball in %v", fromTar.Digest, fromTar.Size>>20, fromTar.Files, time.Since(start).Round(time.Millisecond))
	for _, p := range []string{"extract", "digest", "commit"} {
		if _, ok := phases.Load(p); !ok {
			t.Errorf("no progress reported for phase %s", p)
		}
	}
	start = time.Now()
	fromDir, err := s.Import(ctx, "deb-dir", Dir{Path: tree}, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("imported the directory in %v", time.Since(start).Round(time.Millisecond))
	if fromTar.Digest != fromDir.Digest {
		t.Errorf("tarball and directory unpack differently: %s vs %s", fromTar.Digest, fromDir.Digest)
		diffTrees(t, fromDir.Path, fromTar.Path)
	}
	for _, rel := range []string{"usr/lib/systemd/systemd", "etc/os-release", "usr/bin/su"} {
		if _, err := os.Stat(filepath.Join(fromTar.Path, rel)); err != nil {
			t.Errorf("imported tree lacks %s: %v", rel, err)
		}
	}

	exp := filepath.Join(t.TempDir(), "deb.tar.zst")
	f, err := os.Create(exp)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := s.Export(ctx, "deb-tar", f, CompressZstd); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Logf("exported in %v", time.Since(start).Round(time.Millisecond))
	again, err := s.Import(ctx, "deb-again", Tar{Location: exp}, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != fromTar.Digest {
		t.Errorf("export round trip changed the digest: %s → %s", fromTar.Digest, again.Digest)
		diffTrees(t, fromTar.Path, again.Path)
	}
}

// diffTrees logs the first manifest lines that differ between two trees.
func diffTrees(t *testing.T, a, b string) {
	t.Helper()
	la, lb := manifestLines(t, a), manifestLines(t, b)
	shown := 0
	for k, v := range la {
		if lb[k] != v && shown < 10 {
			t.Logf("differs: %s\n  a: %s\n  b: %s", k, v, lb[k])
			shown++
		}
	}
	for k := range lb {
		if _, ok := la[k]; !ok && shown < 20 {
			t.Logf("only in b: %s", k)
			shown++
		}
	}
}

func manifestLines(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	err := walkTree(ctxT(t), root, func(n *node) error {
		xs, _ := n.xattrs()
		out[n.rel] = fmt.Sprintf("%o %d:%d %d.%d size=%d x=%v", n.st.Mode, n.st.Uid, n.st.Gid, n.st.Mtim.Sec, n.st.Mtim.Nsec, n.st.Size, xs)
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestImportCompressions imports the same small tree as plain, gzip, xz and
// zstd archives (told by content: the names lie) and over HTTP with a checked
// sha256: all give one digest. A wrong sha256 fails and leaves nothing.
func TestImportCompressions(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.RequireCommand(t, "xz", "zstd", "gzip")
	ctx := ctxT(t)
	s := openStore(t)
	tree := smallTree(t)
	if _, err := s.Import(ctx, "src", Dir{Path: tree}, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.tar")
	f, err := os.Create(plain)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Export(ctx, "src", f, CompressNone); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want, _ := s.Image("src")
	data, _ := os.ReadFile(plain)
	for _, c := range []struct{ name, cmd string }{{"a.tar.xz", "gzip -c"}, {"b.tar", "xz -c"}, {"c.tgz", "zstd -q -c"}, {"d.tar.zst", "cat"}} {
		p := filepath.Join(dir, c.name)
		if out, err := runSh(`$1 < "$2" > "$3"`, c.cmd, plain, p); err != nil {
			t.Fatalf("%s: %v %s", c.cmd, err, out)
		}
		img, err := s.Import(ctx, "c"+strings.Split(c.name, ".")[0], Tar{Location: p}, ImportOptions{})
		if err != nil {
			t.Errorf("%s (%s): %v", c.name, c.cmd, err)
			continue
		}
		if img.Digest != want.Digest {
			t.Errorf("%s (%s): digest %s, want %s", c.name, c.cmd, img.Digest, want.Digest)
		}
	}

	sum := sha256.Sum256(data)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/root.tar" {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "root.tar", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	var sawDownload bool
	img, err := s.Import(ctx, "web", Tar{Location: srv.URL + "/root.tar", SHA256: hex.EncodeToString(sum[:])},
		ImportOptions{Progress: func(p Progress) { sawDownload = sawDownload || p.Phase == "download" && p.Total == int64(len(data)) }})
	if err != nil || img.Digest != want.Digest {
		t.Fatalf("http import = %v, %v", img, err)
	}
	if !sawDownload {
		t.Error("no download progress with the total size")
	}
	bad := strings.Repeat("0", 64)
	if _, err := s.Import(ctx, "bad", Tar{Location: srv.URL + "/root.tar", SHA256: bad}, ImportOptions{}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not the expected "+bad) {
		t.Errorf("wrong sha256 = %v", err)
	}
	if _, err := s.Import(ctx, "missing", Tar{Location: srv.URL + "/nope.tar"}, ImportOptions{}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404 = %v", err)
	}
	if _, err := s.Image("bad"); !errors.Is(err, ErrNotFound) {
		t.Errorf("failed import left an image: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(s.Dir(), "images/.tmp"))
	if len(ents) != 0 {
		t.Errorf("failed imports left %d work directories", len(ents))
	}
}

func runSh(script string, args ...string) (string, error) {
	out, err := execCommand("sh", append([]string{"-c", script, "sh"}, args...)...).CombinedOutput()
	return string(out), err
}

// TestImportDebootstrap builds a minbase Debian 12 image with debootstrap from
// the Debian mirror, with its progress lines shown.
func TestImportDebootstrap(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	testenv.RequireCommand(t, "debootstrap")
	s := openStore(t)
	var msgs []string
	var mu sync.Mutex
	start := time.Now()
	img, err := s.Import(ctxT(t), "bookworm", Debootstrap{Suite: "bookworm", Mirror: testenv.Mirror()}, ImportOptions{
		Progress: func(p Progress) {
			if p.Message != "" {
				mu.Lock()
				msgs = append(msgs, p.Message)
				mu.Unlock()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("debootstrap image %s (%d MB) in %v, %d progress lines", img.Digest, img.Size>>20, time.Since(start).Round(time.Second), len(msgs))
	joined := strings.Join(msgs, "\n")
	for _, want := range []string{"Retrieving", "Base system installed successfully"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no progress line with %q in:\n%s", want, joined)
		}
	}
	if b, err := os.ReadFile(filepath.Join(img.Path, "etc/debian_version")); err != nil || !strings.HasPrefix(string(b), "12") {
		t.Errorf("etc/debian_version = %q, %v", b, err)
	}
	if debs, _ := filepath.Glob(filepath.Join(img.Path, "var/cache/apt/archives/*.deb")); len(debs) > 0 {
		t.Errorf("%d downloaded .debs left in the image", len(debs))
	}
	if !strings.HasPrefix(img.Source, "debootstrap:bookworm minbase ") {
		t.Errorf("source = %q", img.Source)
	}
}
