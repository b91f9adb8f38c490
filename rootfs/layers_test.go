package rootfs

import (
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestLayeredImport imports a three-layer image (whiteouts of a file and a
// directory, an opaque directory, changed files, a file become a directory
// and back, a whited-out file brought back) and checks the store's layers,
// the image's record, and the merged view through an overlay root mounted
// here and through a flattened copy root: the two show the same tree.
func TestLayeredImport(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	src := newStack("test.example/stack:1", baseLayer(t), changeLayer(t), topLayer(t))
	var mu sync.Mutex
	phases := map[string]Progress{}
	start := time.Now()
	img, err := s.Import(ctx, "stack", src, ImportOptions{SpecHash: "h", Progress: func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		phases[p.Phase] = p
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("imported 3 layers in %v", time.Since(start).Round(time.Microsecond))
	li, _ := src.Resolve(ctx)
	if img.Kind != ImageKindOCI || img.Digest != li.Digest || img.Ref != li.Ref || img.Platform != "linux/amd64" ||
		img.SpecHash != "h" || img.Path != "" || len(img.Layers) != 3 || img.Config == nil || img.Config.Cmd[0] != "/bin/sh" {
		t.Fatalf("image = %+v", img)
	}
	for i, l := range li.Layers {
		p, ok := phases[LayerPhase(l)]
		if !ok || p.Total != l.Size || p.Done != l.Size {
			t.Errorf("progress of layer %d: %+v, want done = total = %d", i, p, l.Size)
		}
		if got := img.Layers[i]; got.DiffID != l.DiffID || got.Digest != l.Digest || got.BlobSize != l.Size || got.Path != s.layerTree(l.DiffID) {
			t.Errorf("layer %d = %+v", i, got)
		}
	}
	if got := storedLayers(t, s); len(got) != 3 {
		t.Errorf("layers stored: %v", got)
	}
	if left := storeLeftovers(t, s); len(left) != 0 {
		t.Errorf("work directories left: %v", left)
	}
	checkConverted(t, s.layerTree(li.Layers[1].DiffID))

	r, err := s.CreateRoot(ctx, "m1", "stack", StrategyOverlay)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{s.layerTree(li.Layers[2].DiffID), s.layerTree(li.Layers[1].DiffID), s.layerTree(li.Layers[0].DiffID)}
	if !slices.Equal(r.Overlay.Lower, want) || !slices.Equal(r.Layers, img.layerIDs()) {
		t.Fatalf("overlay lowers %v (layers %v), want %v", r.Overlay.Lower, r.Layers, want)
	}
	view := t.TempDir()
	merged := inOverlay(t, r, `cp -a "$R/." "`+view+`/"; `+listScript)
	checkMerged(t, view)
	c, err := s.CreateRoot(ctx, "m2", "stack", StrategyCopy)
	if err != nil {
		t.Fatal(err)
	}
	checkMerged(t, c.Dir)
	if flat := listDir(t, c.Dir); flat != merged {
		t.Errorf("the flattened copy and the overlay differ:\n%s", testenv.Diff(merged, flat))
	}
	if v, err := getXattr(filepath.Join(c.Dir, "etc/keep"), "user.berth"); err == nil && v != "kept" {
		t.Errorf("etc/keep's xattr in the copy: %q", v)
	}
	if _, err := getXattr(filepath.Join(c.Dir, "etc/opq"), opaqueXattr); err == nil {
		t.Errorf("the copy's etc/opq carries overlayfs's opaque marker")
	}
	if _, err := s.CreateRoot(ctx, "m3", "stack", StrategyBtrfs); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "root.strategy: overlay") {
		t.Errorf("a btrfs root of a layered image: %v, want ErrUnsupported naming root.strategy: overlay", err)
	}
}

// checkConverted checks the change layer as stored: overlayfs whiteouts and
// an opaque directory, no .wh. file left.
func checkConverted(t *testing.T, tree string) {
	t.Helper()
	for _, rel := range []string{"etc/gone", "var/gonedir", "nothing-there"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(tree, rel), &st); err != nil || !isWhiteout(&st) || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s in the layer: %+v %v, want a 0:0 character device owned by 0:0", rel, st, err)
		}
	}
	if v, err := getXattr(filepath.Join(tree, "etc/opq"), opaqueXattr); err != nil || v != "y" {
		t.Errorf("etc/opq's %s = %q, %v", opaqueXattr, v, err)
	}
	if _, err := getXattr(filepath.Join(tree, "etc"), opaqueXattr); err == nil {
		t.Errorf("etc is opaque")
	}
	filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".wh.") {
			t.Errorf("%s left in the layer", p)
		}
		return nil
	})
	if fi, err := os.Stat(filepath.Join(tree, "etc")); err != nil || fi.ModTime().Unix() != 0 {
		t.Errorf("etc's mtime after the conversion: %v %v, want the archive's (0)", fi.ModTime(), err)
	}
}

func getXattr(p, name string) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// TestHostileLayers imports layers that attack the store, each on top of the
// base layer: names that climb out, a symlink to a host directory and a file
// written through it, whiteouts that name no file of their directory or
// point up, a whiteout directory, a planted opaque xattr and device nodes.
// A canary directory on the host beside the store stays untouched; what is
// refused leaves nothing but the verified base layer.
func TestHostileLayers(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	canary := t.TempDir()
	sda := ent{name: "dev/sda", typ: '4', mode: 0o660, major: 8, minor: 0}
	planted := dir("etc/planted")
	planted.xattrs = map[string]string{opaqueXattr: "y"}
	for _, tc := range []struct {
		name   string
		ents   []ent
		reject string
		check  func(t *testing.T, tree string)
	}{
		{name: "dot-dot name", ents: []ent{file("etc/../../escape", "x")}, reject: "climbs out"},
		{name: "dot-dot whiteout path", ents: []ent{file("../.wh.etc", "")}, reject: "climbs out"},
		{name: "whiteout of ..", ents: []ent{file("etc/.wh...", "")}, reject: "names no file"},
		{name: "whiteout of .", ents: []ent{file(".wh..", "")}, reject: "names no file"},
		{name: "empty whiteout", ents: []ent{file("etc/.wh.", "")}, reject: "names no file"},
		{name: "whiteout directory", ents: []ent{dir("etc/.wh.keep"), file("etc/.wh.keep/x", "x")}, reject: "is a directory"},
		{name: "file through a dangling symlink", ents: []ent{symlink("lnk", canary), file("lnk/pwned", "pwned")}, reject: "does not exist"},
		{name: "file through an absolute symlink", ents: []ent{dir(canary), symlink("lnk", canary), file("lnk/pwned", "pwned")},
			check: func(t *testing.T, tree string) {
				if b, err := os.ReadFile(filepath.Join(tree, canary, "pwned")); err != nil || string(b) != "pwned" {
					t.Errorf("the file written through the link is not inside the layer: %q %v", b, err)
				}
			}},
		{name: "whiteout through an absolute symlink", ents: []ent{dir("etc"), symlink("etclink", "/etc"), file("etclink/.wh.passwd", "")},
			check: func(t *testing.T, tree string) {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(tree, "etc/passwd"), &st); err != nil || !isWhiteout(&st) {
					t.Errorf("the whiteout through the link is not inside the layer: %v", err)
				}
				if _, err := os.Stat("/etc/passwd"); err != nil {
					t.Errorf("the host's /etc/passwd: %v", err)
				}
			}},
		{name: "planted opaque xattr", ents: []ent{planted},
			check: func(t *testing.T, tree string) {
				if _, err := getXattr(filepath.Join(tree, "etc/planted"), opaqueXattr); err == nil {
					t.Errorf("the archive's own trusted.overlay.opaque was kept")
				}
			}},
		{name: "device nodes", ents: []ent{sda, {name: "/" + canary + "/null", typ: '3', mode: 0o666, major: 1, minor: 3}},
			check: func(t *testing.T, tree string) {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(tree, "dev/sda"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
					t.Errorf("dev/sda in the layer: %v", err)
				}
				if err := unix.Lstat(filepath.Join(tree, canary, "null"), &st); err != nil {
					t.Errorf("the device at an absolute path is not inside the layer: %v", err)
				}
			}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			s := openStore(t)
			src := newStack("hostile/"+tc.name, baseLayer(t), makeTar(t, tc.ents...))
			li, _ := src.Resolve(ctx)
			_, err := s.Import(ctx, "hostile", src, ImportOptions{})
			if ents, _ := os.ReadDir(canary); len(ents) != 0 {
				t.Errorf("the canary directory on the host got %v", ents)
			}
			if tc.reject != "" {
				checkRefused(t, s, li, err, tc.reject)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s.layerTree(li.Layers[1].DiffID))
		})
	}
}

// checkRefused checks that the import of li's hostile second layer failed
// naming it and left nothing but the base layer.
func checkRefused(t *testing.T, s *Store, li *LayeredImage, err error, reject string) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), reject) || !strings.Contains(err.Error(), li.Layers[1].Digest) {
		t.Fatalf("import = %v, want ErrInvalid with %q naming layer %s", err, reject, li.Layers[1].Digest)
	}
	if got := storedLayers(t, s); !slices.Equal(got, []string{li.Layers[0].DiffID}) {
		t.Errorf("layers stored after the refusal: %v, want the base alone", got)
	}
	if left := storeLeftovers(t, s); len(left) != 0 {
		t.Errorf("work directories left: %v", left)
	}
	if _, err := s.Image("hostile"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Image after a refused import: %v", err)
	}
}

// TestLayerDiffIDMismatch: a layer whose content is not its diff ID is
// refused naming the image and the layer, and leaves nothing of itself; the
// layers verified meanwhile stay for a retry, and prune removes them.
func TestLayerDiffIDMismatch(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	wrong := sha256Of([]byte("not this layer"))
	stored := map[string]bool{}
	for _, bad := range []int{0, 1} {
		src := newStack("mismatch", baseLayer(t), changeLayer(t))
		src.layers[bad].diffID = wrong
		li, _ := src.Resolve(ctx)
		_, err := s.Import(ctx, "broken", src, ImportOptions{})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `image "broken"`) ||
			!strings.Contains(err.Error(), li.Layers[bad].Digest) || !strings.Contains(err.Error(), wrong) {
			t.Fatalf("layer %d mismatched: %v", bad, err)
		}
		// As many layers as GOMAXPROCS unpack at once: those below the bad
		// one, and those started with it, are verified and stay.
		for i, l := range li.Layers {
			if i != bad && (i < bad || i < runtime.GOMAXPROCS(0)) {
				stored[l.DiffID] = true
			}
		}
		want := slices.Sorted(maps.Keys(stored))
		if got := storedLayers(t, s); !slices.Equal(got, want) {
			t.Errorf("layer %d mismatched: layers stored %v, want %v", bad, got, want)
		}
		if left := storeLeftovers(t, s); len(left) != 0 {
			t.Errorf("work directories left: %v", left)
		}
		if digests, _ := s.digests(); len(digests) != 0 {
			t.Errorf("image records after the failure: %v", digests)
		}
		if _, err := s.Image("broken"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Image after the failure: %v", err)
		}
	}
	res, err := s.Prune()
	if err != nil || len(res.Layers) != len(stored) || res.Freed <= 0 {
		t.Errorf("Prune = %+v, %v: want the %d verified layers removed", res, err, len(stored))
	}
	if got := storedLayers(t, s); len(got) != 0 {
		t.Errorf("layers after prune: %v", got)
	}
}

// TestLayersShared imports two images on one base: the base is stored (and
// read) once, the store's disk usage counts it once, and the list shows it
// as shared by both. Two imports of a third image at once both succeed and
// leave one copy of each layer.
func TestLayersShared(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	big := file("usr/share/big", strings.Repeat("berth layer ", 1<<17)) // 1.5 MiB
	base := makeTar(t, dir("etc"), file("etc/os-release", "NAME=base\n"), big)
	a := newStack("shared/a", base, makeTar(t, file("etc/a", "a")))
	b := newStack("shared/b", base, makeTar(t, file("etc/b", "b")))
	if _, err := s.Import(ctx, "a", a, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	var messages []string
	if _, err := s.Import(ctx, "b", b, ImportOptions{Progress: func(p Progress) {
		if p.Message != "" {
			messages = append(messages, p.Phase+": "+p.Message)
		}
	}}); err != nil {
		t.Fatal(err)
	}
	if n := b.opened.Load(); n != 1 {
		t.Errorf("the second image opened %d layers, want 1 (the base is stored)", n)
	}
	if len(messages) != 1 || !strings.Contains(messages[0], "already stored") {
		t.Errorf("progress messages of the second import: %q", messages)
	}
	if got := storedLayers(t, s); len(got) != 3 {
		t.Errorf("layers stored: %v, want 3", got)
	}
	imgs, err := s.Images()
	if err != nil || len(imgs) != 2 {
		t.Fatalf("Images = %+v, %v", imgs, err)
	}
	baseSize := imgs[0].Layers[0].Size
	for _, img := range imgs {
		if img.Shared != baseSize || !img.Layers[0].Shared || img.Layers[1].Shared || img.Size <= baseSize {
			t.Errorf("image %s: size %d, shared %d, layers %+v; want the base (%d) shared", img.Name, img.Size, img.Shared, img.Layers, baseSize)
		}
	}
	used, err := diskUsage(ctx, s.layersDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("two images of %d and %d bytes sharing a %d-byte base: %d bytes of layers on disk", imgs[0].Size, imgs[1].Size, baseSize, used)
	if used >= imgs[0].Size+imgs[1].Size-baseSize/2 || baseSize < 1<<20 {
		t.Errorf("the layers take %d bytes: the base is stored more than once", used)
	}
	if one, err := s.Image("a"); err != nil || one.Shared != baseSize {
		t.Errorf("Image(a) = %+v, %v: want shared %d", one, err, baseSize)
	}

	c := newStack("shared/c", base, makeTar(t, file("etc/c", "c")), makeTar(t, file("etc/c2", "c2")))
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.Import(ctx, "c"+string(rune('0'+i)), c, ImportOptions{}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent import %d: %v", i, err)
		}
	}
	if got := storedLayers(t, s); len(got) != 5 {
		t.Errorf("layers after the concurrent imports: %v, want 5", got)
	}
	if left := storeLeftovers(t, s); len(left) != 0 {
		t.Errorf("work directories left: %v", left)
	}
}

// TestLayersPrune: removing an image removes the layers only it had; an
// overlay root keeps its image's layers when the name moves on; removing the
// root frees them; an import in progress keeps the layers it leases.
func TestLayersPrune(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	base := baseLayer(t)
	a := newStack("prune/a", base, changeLayer(t))
	b := newStack("prune/b", base, topLayer(t))
	la, _ := a.Resolve(ctx)
	lb, _ := b.Resolve(ctx)
	for name, src := range map[string]Source{"a": a, "b": b} {
		if _, err := s.Import(ctx, name, src, ImportOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if freed, err := s.RemoveImage("a"); err != nil || freed <= 0 {
		t.Errorf("RemoveImage(a) = %d, %v", freed, err)
	}
	if got := storedLayers(t, s); !slices.Equal(got, sortedIDs(lb)) {
		t.Errorf("layers after removing a: %v, want b's %v", got, sortedIDs(lb))
	}
	r, err := s.CreateRoot(ctx, "m", "b", StrategyOverlay)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveImage("b"); !errors.Is(err, ErrBusy) {
		t.Errorf("RemoveImage of an image a root uses: %v, want ErrBusy", err)
	}
	// The name moves to another image: b's layers stay under the root.
	if _, err := s.Import(ctx, "b", a, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Prune(); err != nil || len(res.Layers) != 0 || len(res.Digests) != 0 {
		t.Errorf("Prune with the root = %+v, %v: want nothing removed", res, err)
	}
	inOverlay(t, r, `test "$(cat "$R/etc/gone")" = back`)
	if _, err := s.RemoveRoot("m", true); err != nil {
		t.Fatal(err)
	}
	if got := storedLayers(t, s); !slices.Equal(got, sortedIDs(la)) {
		t.Errorf("layers after removing the root: %v, want a's %v", got, sortedIDs(la))
	}

	// A lease of an import in progress keeps an unused layer.
	extra := newStack("prune/extra", makeTar(t, file("x", "x")))
	if _, err := s.Import(ctx, "extra", extra, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveImage("extra"); err != nil {
		t.Fatal(err)
	}
	le, _ := extra.Resolve(ctx)
	if _, err := s.Import(ctx, "extra", extra, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	wd, err := newWorkDir(s.tmpImages(), "import-lease-")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(filepath.Join(wd.path, leaseFile), []string{le.Layers[0].DiffID}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.namePath("extra")); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Prune(); err != nil || len(res.Layers) != 0 {
		t.Errorf("Prune with a lease = %+v, %v: want the leased layer kept", res, err)
	}
	wd.discard()
	if res, err := s.Prune(); err != nil || !slices.Equal(res.Layers, []string{le.Layers[0].DiffID}) {
		t.Errorf("Prune after the lease = %+v, %v: want %s removed", res, err, le.Layers[0].DiffID)
	}
}

func sortedIDs(li *LayeredImage) []string {
	var ids []string
	for _, l := range li.Layers {
		ids = append(ids, l.DiffID)
	}
	slices.Sort(ids)
	return ids
}

// TestLayerStack: a layer whose root is opaque hides every layer below it,
// and a layer repeated counts once, where it is uppermost; overlay and
// flattened roots agree.
func TestLayerStack(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	a, b := makeTar(t, file("a", "a"), file("both", "from a")), makeTar(t, file("b", "b"), file("both", "from b"))
	for _, tc := range []struct {
		name   string
		layers [][]byte
		want   string // the root's files
		lowers int
	}{
		{"opaque-root", [][]byte{baseLayer(t), makeTar(t, opaque(""), file("only", "only")), a}, "a both only", 2},
		{"repeated", [][]byte{a, b, a}, "a b both", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Import(ctx, tc.name, newStack("stack/"+tc.name, tc.layers...), ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			r, err := s.CreateRoot(ctx, tc.name+"-o", tc.name, StrategyOverlay)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Overlay.Lower) != tc.lowers {
				t.Errorf("lowers %v, want %d", r.Overlay.Lower, tc.lowers)
			}
			got := inOverlay(t, r, `cd "$R"; echo $(ls); cat both`)
			if want := tc.want + "\nfrom a"; got != want {
				t.Errorf("overlay root shows %q, want %q", got, want)
			}
			c, err := s.CreateRoot(ctx, tc.name+"-c", tc.name, StrategyCopy)
			if err != nil {
				t.Fatal(err)
			}
			if flat, merged := listDir(t, c.Dir), inOverlay(t, r, listScript); flat != merged {
				t.Errorf("the flattened copy and the overlay differ:\n%s", testenv.Diff(merged, flat))
			}
		})
	}
}

// TestLayeredImportResumes: an import cancelled in its second layer leaves
// the first layer stored and nothing else; the next import opens only the
// second.
func TestLayeredImportResumes(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	src := newStack("resume", baseLayer(t), changeLayer(t))
	li, _ := src.Resolve(ctx)
	cctx, cancel := context.WithCancel(ctx)
	open := li.Layers[1].Open
	stalled := &stackSource{ref: src.ref}
	stalled.resolve = func() (*LayeredImage, error) {
		l := *li
		l.Layers = slices.Clone(li.Layers)
		l.Layers[1].Open = func(c context.Context, count func(int64)) (io.ReadCloser, error) {
			// The layers unpack at once: the user presses Ctrl-C while
			// this one downloads, once the first is stored.
			for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if _, err := os.Stat(s.layerDir(li.Layers[0].DiffID)); err == nil {
					break
				}
			}
			cancel()
			return open(c, count)
		}
		return &l, nil
	}
	if _, err := s.Import(cctx, "resume", stalled, ImportOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled import: %v", err)
	}
	if got := storedLayers(t, s); !slices.Equal(got, []string{li.Layers[0].DiffID}) {
		t.Errorf("layers after the cancel: %v, want the first", got)
	}
	if left := storeLeftovers(t, s); len(left) != 0 {
		t.Errorf("work directories left: %v", left)
	}
	before := src.opened.Load()
	if _, err := s.Import(ctx, "resume", src, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := src.opened.Load() - before; n != 1 {
		t.Errorf("the resumed import opened %d layers, want 1", n)
	}
}
