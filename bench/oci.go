package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/ocitest"
	"github.com/berthd/berth/rootfs"
	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func init() {
	register("oci", "an OCI image of 3 layers from a registry: pull + unpack + first root, berth vs skopeo copy + umoci unpack (Incus's path); a second root; the disk two images on one base use", benchOCI)
}

// ociRuns is how many pulls of each side are timed (BENCH_OCI_RUNS
// overrides); ociRootRuns how many second roots.
var ociRuns, ociRootRuns = envInt("BENCH_OCI_RUNS", 5, 1), 7

// ociProfile, from BENCH_OCI_CPUPROFILE, is where berth's pulls write a CPU
// profile each: FILE.1, FILE.2 … (`go tool pprof` takes them together).
var ociProfile = os.Getenv("BENCH_OCI_CPUPROFILE")

// ociBench is the oci bench under way: the registry serving the images of
// the Debian guest, the run's work directory and the figures so far.
type ociBench struct {
	ctx  context.Context
	work string
	reg  *ocitest.Registry
	refs map[string]string // base, app → 127.0.0.1:PORT/debian@sha256:…
	// layout is skopeo's last copy of debian:base, unpacked once.
	layout string
	figs   map[string]any
	n      int // work directories made so far, for their names
}

// benchOCI pushes the Debian 12 guest as an image of three gzip layers (its
// /usr, the rest, a small layer with a whiteout and an opaque directory) to
// an in-process registry on 127.0.0.1, with a second image on the same two
// base layers, and measures against Incus's way to an instance root from an
// OCI image, `skopeo copy docker://… oci:DIR` then `umoci unpack`, from the
// same registry in the same run:
//
//   - pull: from nothing to a machine root, median of ociRuns each: berth's
//     rootfs.Store.Import of the Registry source then CreateRoot (goal ≤ 0.5
//     of skopeo + umoci);
//   - a second root of the same image (goal < 20 ms), beside umoci's, which
//     is another unpack;
//   - the disk both images take (goal: the base once): berth's image store
//     and roots beside skopeo's two layouts and umoci's two bundles.
func benchOCI() (map[string]any, error) {
	for _, c := range []string{"skopeo", "umoci"} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, fmt.Errorf("%s is not installed (hack/deps.sh installs it)", c)
		}
	}
	guest, err := testenv.DebianGuestDir()
	if err != nil {
		return nil, fmt.Errorf("the Debian 12 guest: %w", err)
	}
	work, remove, err := newWorkDir("oci")
	if err != nil {
		return nil, err
	}
	defer func() {
		fmt.Println("   cleaning up", work)
		remove()
	}()
	b := &ociBench{ctx: context.Background(), work: work, refs: map[string]string{},
		figs: map[string]any{"runs": ociRuns, "root_runs": ociRootRuns}}
	if b.reg, err = ocitest.NewRegistry(); err != nil {
		return nil, err
	}
	defer b.reg.Close()
	if err := b.push(guest); err != nil {
		return nil, err
	}
	s, err := b.pulls()
	if err != nil {
		return nil, err
	}
	if err := b.secondRoots(s); err != nil {
		return nil, err
	}
	if err := b.disk(); err != nil {
		return nil, err
	}
	fmt.Println("   (2 cores shared with other work; medians; the registry serves from memory over plain HTTP on 127.0.0.1;")
	fmt.Println("    berth syncs each layer before it counts it stored, skopeo and umoci do not: the + sync row adds that)")
	return b.figs, nil
}

// push builds the images' layers from the guest and pushes debian:base
// (usr, rest, top) and debian:app (usr, rest, app).
func (b *ociBench) push(guest string) error {
	start := time.Now()
	dir := filepath.Join(b.work, "blobs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	usr, rest, err := ocitest.SplitTree(dir, guest, compression.GZip)
	if err != nil {
		return err
	}
	top, err := ocitest.Layer(compression.GZip, ocitest.Dir("etc"), ocitest.Whiteout("etc", "motd"),
		ocitest.Dir("etc/apt/apt.conf.d"), ocitest.Opaque("etc/apt/apt.conf.d"), ocitest.File("etc/apt/apt.conf.d/99bench", "//\n"))
	if err != nil {
		return err
	}
	app, err := ocitest.Layer(compression.GZip, ocitest.Dir("srv"), ocitest.File("srv/app", strings.Repeat("app\n", 1<<18)))
	if err != nil {
		return err
	}
	for tag, ls := range map[string][]v1.Layer{"base": {usr, rest, top}, "app": {usr, rest, app}} {
		img, err := ocitest.Image(v1.Config{}, ls...)
		if err != nil {
			return err
		}
		d, err := b.reg.Push("debian:"+tag, img)
		if err != nil {
			return err
		}
		b.refs[tag] = b.reg.Host + "/debian@" + d.String()
	}
	var blobs int64
	for _, l := range []v1.Layer{usr, rest, top} {
		n, _ := l.Size()
		blobs += n
	}
	fmt.Printf("   image debian:base: 3 gzip layers, %s of blobs (pushed in %v)\n", ociHuman(blobs), time.Since(start).Round(time.Millisecond))
	b.figs["image_blob_bytes"] = blobs
	return nil
}

// dir is a new directory name in the work directory.
func (b *ociBench) dir(what string) string {
	b.n++
	return filepath.Join(b.work, fmt.Sprintf("%s-%d", what, b.n))
}

// ociPull is one pull of debian:base to a first root by each side.
type ociPull struct {
	berthImport, berthRoot time.Duration
	skopeo, umoci          time.Duration
	sync                   time.Duration // umoci's tree written back, as berth's is
}

// pulls times ociRuns pulls of debian:base to a first root by each side,
// alternating, each into directories of its own, and returns the store of
// berth's last. Nothing is removed until the end: on ext4, creating many
// files soon after a large rm -rf is several times slower.
func (b *ociBench) pulls() (*rootfs.Store, error) {
	var runs []ociPull
	var last *rootfs.Store
	for range ociRuns {
		var p ociPull
		var err error
		// Write back what the run before left dirty, untimed.
		_ = exec.Command("sync").Run()
		if last, p.berthImport, p.berthRoot, err = b.berthPull("base"); err != nil {
			return nil, err
		}
		_ = exec.Command("sync").Run()
		layout, bundle := b.dir("layout"), b.dir("bundle")
		if p.skopeo, err = b.skopeoCopy("base", layout); err != nil {
			return nil, err
		}
		if p.umoci, err = umociUnpack(layout, "base", bundle); err != nil {
			return nil, err
		}
		start := time.Now()
		_ = exec.Command("sync").Run()
		p.sync = time.Since(start)
		runs = append(runs, p)
		b.layout = layout
	}
	med := func(f func(p ociPull) time.Duration) time.Duration {
		var ds []time.Duration
		for _, p := range runs {
			ds = append(ds, f(p))
		}
		return median(ds)
	}
	berth := med(func(p ociPull) time.Duration { return p.berthImport + p.berthRoot })
	incus := med(func(p ociPull) time.Duration { return p.skopeo + p.umoci })
	synced := med(func(p ociPull) time.Duration { return p.skopeo + p.umoci + p.sync })
	rows := []struct {
		key, label string
		d          time.Duration
	}{
		{"berth_import", "berth: Store.Import (pull + unpack)", med(func(p ociPull) time.Duration { return p.berthImport })},
		{"berth_first_root", "berth: CreateRoot (first root)", med(func(p ociPull) time.Duration { return p.berthRoot })},
		{"berth_pull_to_root", "berth: pull to a first root", berth},
		{"skopeo_copy", "skopeo copy docker:// oci:", med(func(p ociPull) time.Duration { return p.skopeo })},
		{"umoci_unpack", "umoci unpack (first root)", med(func(p ociPull) time.Duration { return p.umoci })},
		{"skopeo_umoci_pull_to_root", "skopeo + umoci: pull to a first root", incus},
		{"skopeo_umoci_sync_pull_to_root", "skopeo + umoci + sync (berth's durability)", synced},
	}
	fmt.Printf("   pull + unpack + first root of debian:base, medians of %d runs:\n", ociRuns)
	for _, r := range rows {
		fmt.Printf("   %-40s %10s\n", r.label, rfRound(r.d))
		b.figs[r.key+"_ms"] = ms(r.d)
	}
	ratio := float64(berth) / float64(incus)
	b.figs["pull_ratio_berth_over_skopeo_umoci"] = ociRound2(ratio)
	fmt.Printf("   %-40s %10.2f   (goal ≤ 0.5)\n", "ratio berth / (skopeo + umoci)", ratio)
	ratioSynced := float64(berth) / float64(synced)
	b.figs["pull_ratio_berth_over_skopeo_umoci_sync"] = ociRound2(ratioSynced)
	fmt.Printf("   %-40s %10.2f\n", "ratio berth / (skopeo + umoci + sync)", ratioSynced)
	return last, nil
}

// berthPull imports debian:tag into a new store and makes a machine root of
// it, as berthd does for a Machine of an Image with that registry source.
func (b *ociBench) berthPull(tag string) (s *rootfs.Store, imp, root time.Duration, err error) {
	if s, err = rootfs.Open(b.dir("berth")); err != nil {
		return nil, 0, 0, err
	}
	stop, err := b.profile()
	if err != nil {
		return nil, 0, 0, err
	}
	defer stop()
	start := time.Now()
	if _, err := s.Import(b.ctx, "debian-"+tag, rootfs.Registry{Ref: b.refs[tag], Insecure: true}, rootfs.ImportOptions{}); err != nil {
		return nil, 0, 0, err
	}
	imp = time.Since(start)
	start = time.Now()
	if _, err := s.CreateRoot(b.ctx, "first-"+tag, "debian-"+tag, rootfs.StrategyAuto); err != nil {
		return nil, 0, 0, err
	}
	return s, imp, time.Since(start), nil
}

// profile starts a CPU profile of the pull that follows when
// BENCH_OCI_CPUPROFILE asks for one, and returns what stops it.
func (b *ociBench) profile() (stop func(), err error) {
	if ociProfile == "" {
		return func() {}, nil
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", ociProfile, b.n))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// skopeoCopy copies debian:tag from the registry into the OCI layout dir,
// as Incus does before it unpacks an OCI image.
func (b *ociBench) skopeoCopy(tag, layout string) (time.Duration, error) {
	start := time.Now()
	err := rfRun("skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
		"docker://"+b.refs[tag], "oci:"+layout+":"+tag)
	return time.Since(start), err
}

// umociUnpack unpacks the layout's image tag into the runtime bundle dir
// (its rootfs a full tree, the layers applied in turn), as Incus does for
// each instance.
func umociUnpack(layout, tag, bundle string) (time.Duration, error) {
	start := time.Now()
	err := rfRun("umoci", "unpack", "--keep-dirlinks", "--image", layout+":"+tag, bundle)
	return time.Since(start), err
}

// secondRoots times more machine roots of the image s holds (goal < 20 ms
// each), and for Incus another umoci unpack of the image's layout: it makes
// each instance's root so.
func (b *ociBench) secondRoots(s *rootfs.Store) error {
	var ds []time.Duration
	for i := range ociRootRuns {
		_ = exec.Command("sync").Run()
		start := time.Now()
		if _, err := s.CreateRoot(b.ctx, fmt.Sprintf("second-%d", i), "debian-base", rootfs.StrategyAuto); err != nil {
			return err
		}
		ds = append(ds, time.Since(start))
	}
	_ = exec.Command("sync").Run()
	um, err := umociUnpack(b.layout, "base", b.dir("bundle"))
	if err != nil {
		return err
	}
	med := median(ds)
	fmt.Printf("   second root of the same image: berth %s (median of %d, min %s, max %s; goal < 20 ms), umoci unpack again %s\n",
		rfRound(med), len(ds), rfRound(slices.Min(ds)), rfRound(slices.Max(ds)), rfRound(um))
	b.figs["berth_second_root_ms"] = ms(med)
	b.figs["umoci_second_unpack_ms"] = ms(um)
	return nil
}

// disk pulls both images, debian:base and debian:app (its two base layers
// the same), each way into fresh directories with a root each, and compares
// what they take on disk: berth's store (layers, image records, roots)
// against skopeo's two layouts and umoci's two bundles.
func (b *ociBench) disk() error {
	state := b.dir("berth")
	s, err := rootfs.Open(state)
	if err != nil {
		return err
	}
	var layouts, bundles []string
	for _, tag := range []string{"base", "app"} {
		if _, err := s.Import(b.ctx, "debian-"+tag, rootfs.Registry{Ref: b.refs[tag], Insecure: true}, rootfs.ImportOptions{}); err != nil {
			return err
		}
		if _, err := s.CreateRoot(b.ctx, "m-"+tag, "debian-"+tag, rootfs.StrategyAuto); err != nil {
			return err
		}
		layout, bundle := b.dir("layout"), b.dir("bundle")
		if _, err := b.skopeoCopy(tag, layout); err != nil {
			return err
		}
		if _, err := umociUnpack(layout, tag, bundle); err != nil {
			return err
		}
		layouts, bundles = append(layouts, layout), append(bundles, bundle)
	}
	_ = exec.Command("sync").Run()
	imgs, err := s.Images()
	if err != nil {
		return err
	}
	var sum int64
	size := map[string]int64{}
	for _, img := range imgs {
		sum += img.Size
		size[img.Name] = img.Size
	}
	rows := []struct {
		key, label string
		paths      []string
	}{
		{"berth_layers", "berth: layer store", []string{filepath.Join(state, "images", "layers")}},
		{"berth_store", "berth: images and 2 roots", []string{filepath.Join(state, "images"), filepath.Join(state, "machines")}},
		{"skopeo_layouts", "skopeo: 2 OCI layouts", layouts},
		{"umoci_bundles", "umoci: 2 bundles", bundles},
		{"skopeo_umoci", "skopeo + umoci", append(append([]string{}, layouts...), bundles...)},
	}
	fmt.Printf("   disk of debian:base and debian:app (%s and %s, their 2 base layers shared):\n", ociHuman(size["debian-base"]), ociHuman(size["debian-app"]))
	got := map[string]int64{}
	for _, r := range rows {
		n, err := duBytes(r.paths...)
		if err != nil {
			return err
		}
		got[r.key] = n
		b.figs["disk_"+r.key+"_bytes"] = n
		fmt.Printf("   %-40s %10s\n", r.label, ociHuman(n))
	}
	ratio := float64(got["berth_store"]) / float64(got["skopeo_umoci"])
	b.figs["disk_ratio_berth_over_skopeo_umoci"] = ociRound2(ratio)
	b.figs["disk_images_sum_bytes"] = sum
	fmt.Printf("   %-40s %10.2f   (goal: the base once; the images' sizes add up to %s)\n", "ratio berth / (skopeo + umoci)", ratio, ociHuman(sum))
	return nil
}

// duBytes is du's disk usage of the trees at paths together, in bytes, a
// file hard-linked under several counted once.
func duBytes(paths ...string) (int64, error) {
	out, err := exec.Command("du", append([]string{"-s", "-c", "-B1"}, paths...)...).Output()
	if err != nil {
		return 0, fmt.Errorf("du %s: %w", strings.Join(paths, " "), err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strconv.ParseInt(strings.Fields(lines[len(lines)-1])[0], 10, 64)
}

func ociRound2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

func ociHuman(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
