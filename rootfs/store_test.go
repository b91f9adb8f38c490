package rootfs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
)

// smallTree makes a little root filesystem tree with the kinds of files a real
// one has.
func smallTree(t testing.TB) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "tree")
	script := `set -e; mkdir -p "$1"; cd "$1"
mkdir -p etc usr/bin usr/lib tmp dev home/u
echo 'NAME="tiny"' > etc/os-release
echo hello > usr/bin/hello; chmod 4755 usr/bin/hello
ln usr/bin/hello usr/bin/hello2
ln -s usr/lib lib
ln -s /etc/os-release usr/lib/os-release
mknod dev/null c 1 3; mkfifo dev/fifo
chmod 1777 tmp; chown -R 1000:1000 home/u; echo x > home/u/f
setfattr -n user.berth -v yes etc/os-release 2>/dev/null || true
touch -d '2020-01-02 03:04:05.123456789' etc/os-release etc`
	if out, err := exec.Command("sh", "-c", script, "sh", d).CombinedOutput(); err != nil {
		t.Fatalf("make tree: %v\n%s", err, out)
	}
	return d
}

func TestImportDirAndRoots(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	tree := smallTree(t)
	img, err := s.Import(ctx, "tiny", Dir{Path: tree}, ImportOptions{SpecHash: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	if !validDigest(img.Digest) || img.Name != "tiny" || img.SpecHash != "h1" || img.Size <= 0 || img.Source != "dir:"+tree {
		t.Errorf("image = %+v", img)
	}
	// The same tree again has the same digest: the digest is of the content.
	sum, err := treeDigest(ctx, tree, nil)
	if err != nil || sum.digest != img.Digest {
		t.Errorf("digest of the source tree %s, of the image %s (%v)", sum.digest, img.Digest, err)
	}
	if got, err := s.Image("tiny"); err != nil || got.Digest != img.Digest {
		t.Errorf("Image(tiny) = %+v, %v", got, err)
	}
	if _, err := s.Image("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Image(nope) = %v, want ErrNotFound", err)
	}

	// Overlay is the default here (ext4).
	r, err := s.CreateRoot(ctx, "m1", "tiny", StrategyAuto)
	if err != nil {
		t.Fatal(err)
	}
	if r.Strategy != StrategyOverlay && r.Strategy != StrategyBtrfs && r.Strategy != StrategyReflink {
		t.Errorf("auto chose %s", r.Strategy)
	}
	if r.Strategy == StrategyOverlay {
		out := inOverlay(t, r, `cat $R/etc/os-release; stat -c %A $R/usr/bin/hello; echo data > $R/home/u/new`)
		if !strings.Contains(out, `NAME="tiny"`) || !strings.Contains(out, "-rwsr-xr-x") {
			t.Errorf("overlay root shows:\n%s", out)
		}
		if b, err := os.ReadFile(filepath.Join(r.Overlay.Upper, "home/u/new")); err != nil || string(b) != "data\n" {
			t.Errorf("write into the overlay did not land in the upper dir: %q %v", b, err)
		}
		if _, err := os.Stat(filepath.Join(img.Path, "home/u/new")); err == nil {
			t.Error("write into the overlay reached the image")
		}
	}
	// Idempotent.
	r2, err := s.CreateRoot(ctx, "m1", "tiny", StrategyCopy)
	if err != nil || r2.Strategy != r.Strategy || !r2.Created.Equal(r.Created) {
		t.Errorf("second CreateRoot = %+v, %v; want the first root back", r2, err)
	}
	// Copy.
	rc, err := s.CreateRoot(ctx, "m2", "tiny", StrategyCopy)
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := treeDigest(ctx, rc.Dir, nil); err != nil || sum.digest != img.Digest {
		t.Errorf("copy root digest %s, image %s (%v)", sum.digest, img.Digest, err)
	}
	if got, _ := s.Image("tiny"); strings.Join(got.UsedBy, ",") != "m1,m2" {
		t.Errorf("UsedBy = %v", got.UsedBy)
	}

	// Removing the image is refused while roots use it, naming them.
	if _, err := s.RemoveImage("tiny"); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), `"m1", "m2"`) {
		t.Errorf("RemoveImage while used = %v", err)
	}

	// A running machine (lock held) cannot be removed or cloned.
	lock, err := s.LockRoot("m1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LockRoot("m1"); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "process") {
		t.Errorf("second LockRoot = %v", err)
	}
	if _, err := s.RemoveRoot("m1", true); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "stop it before you remove it") {
		t.Errorf("RemoveRoot while locked = %v", err)
	}
	if _, err := s.CloneRoot(ctx, "m1", "m3"); !errors.Is(err, ErrBusy) {
		t.Errorf("CloneRoot while locked = %v", err)
	}
	lock.Unlock()

	// Clone an overlay root: the upper is copied, the lower shared.
	c, err := s.CloneRoot(ctx, "m1", "m3")
	if err != nil {
		t.Fatal(err)
	}
	if c.Strategy != r.Strategy || c.Digest != r.Digest || c.ClonedFrom != "m1" {
		t.Errorf("clone = %+v", c)
	}
	if c.Strategy == StrategyOverlay {
		if out := inOverlay(t, c, `cat $R/home/u/new`); out != "data\n" {
			t.Errorf("clone lost the machine's change: %q", out)
		}
	}
	if _, err := s.CloneRoot(ctx, "m1", "m2"); !errors.Is(err, ErrExists) {
		t.Errorf("clone onto an existing root = %v", err)
	}
	if _, err := s.CloneRoot(ctx, "nope", "m9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("clone of a missing root = %v", err)
	}

	// Remove without deleting data keeps it; with, frees it.
	kept, err := s.RemoveRoot("m2", false)
	if err != nil || kept <= 0 {
		t.Errorf("RemoveRoot(keep) = %d, %v", kept, err)
	}
	if _, err := s.Root("m2"); err != nil {
		t.Errorf("root gone after RemoveRoot without deleteData: %v", err)
	}
	for _, m := range []string{"m1", "m2", "m3"} {
		if freed, err := s.RemoveRoot(m, true); err != nil || freed <= 0 {
			t.Errorf("RemoveRoot(%s) = %d, %v", m, freed, err)
		}
		if _, err := s.Root(m); !errors.Is(err, ErrNotFound) {
			t.Errorf("Root(%s) after removal = %v", m, err)
		}
	}
	if _, err := s.RemoveRoot("m1", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveRoot of a removed root = %v", err)
	}
	if freed, err := s.RemoveImage("tiny"); err != nil || freed <= 0 {
		t.Errorf("RemoveImage = %d, %v", freed, err)
	}
	if _, err := os.Stat(img.Path); !os.IsNotExist(err) {
		t.Errorf("image content still there: %v", err)
	}
	assertClean(t, s)
}

// assertClean checks that the store holds no images, roots or work directories.
func assertClean(t *testing.T, s *Store) {
	t.Helper()
	for _, d := range []string{"images/sha256", "images/names", "images/.tmp", "machines/.tmp"} {
		ents, _ := os.ReadDir(filepath.Join(s.Dir(), d))
		if len(ents) > 0 {
			t.Errorf("%s holds %d entries, want none (first: %s)", d, len(ents), ents[0].Name())
		}
	}
}

func TestRebuildKeepsDigestForRoots(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	tree := smallTree(t)
	v1, err := s.Import(ctx, "img", Dir{Path: tree}, ImportOptions{SpecHash: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateRoot(ctx, "old", "img", StrategyOverlay); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(tree, "etc/new"), []byte("v2"))
	v2, err := s.Import(ctx, "img", Dir{Path: tree}, ImportOptions{SpecHash: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	if v1.Digest == v2.Digest || v2.SpecHash != "v2" {
		t.Fatalf("rebuild: v1 %s v2 %s", v1.Digest, v2.Digest)
	}
	// The old digest stays for the machine made from it.
	if _, err := os.Stat(v1.Path); err != nil {
		t.Fatalf("old image content removed under a machine: %v", err)
	}
	imgs, err := s.Images()
	if err != nil || len(imgs) != 2 || imgs[0].Name != "img" || imgs[1].Name != "" || imgs[1].Digest != v1.Digest ||
		strings.Join(imgs[1].UsedBy, ",") != "old" {
		t.Errorf("Images = %+v, %v", imgs, err)
	}
	// Prune keeps it while used …
	if res, err := s.Prune(); err != nil || len(res.Digests) != 0 {
		t.Errorf("Prune = %+v, %v", res, err)
	}
	// … and removing the last root that uses it frees it too.
	freed, err := s.RemoveRoot("old", true)
	if err != nil {
		t.Fatal(err)
	}
	if freed < v1.Size {
		t.Errorf("freed %d, want at least the old content's %d", freed, v1.Size)
	}
	if _, err := os.Stat(v1.Path); !os.IsNotExist(err) {
		t.Errorf("old content still there: %v", err)
	}
	// Re-importing an unchanged tree is deduplicated.
	v3, err := s.Import(ctx, "img2", Dir{Path: tree}, ImportOptions{})
	if err != nil || v3.Digest != v2.Digest {
		t.Errorf("same tree, other name: %v %v", v3, err)
	}
	if _, err := s.RemoveImage("img"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(v2.Path); err != nil {
		t.Errorf("content removed while img2 refers to it: %v", err)
	}
	if _, err := s.RemoveImage("img2"); err != nil {
		t.Fatal(err)
	}
	assertClean(t, s)
}
