package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/rootfs"
)

func init() {
	register("rootfs", "time to make a machine root from an image: each strategy here beside cp -a, warm and cold, two image sizes", benchRootfs)
}

// rootfsRuns is how many roots each case makes; the median is reported.
const (
	rootfsWarmRuns = 7
	rootfsColdRuns = 3
)

// benchRootfs imports the Debian 12 guest (about 250 MB, "small") and a larger
// variant of it (a second copy of its /usr added, about 400 MB), then times making machine roots from each by every strategy
// this filesystem allows and by `cp -a` of the same tree: warm (page cache
// full) and cold (after dropping caches). Nothing is deleted until every
// measurement is taken: on ext4, creating many files soon after a large
// rm -rf is several times slower, which would bias later cases.
func benchRootfs() (map[string]any, error) {
	guest, err := testenv.DebianGuestDir()
	if err != nil {
		return nil, fmt.Errorf("the Debian 12 guest: %w", err)
	}
	work, remove, err := newWorkDir("rootfs")
	if err != nil {
		return nil, err
	}
	defer func() {
		fmt.Println("   cleaning up", work)
		remove()
	}()
	b := &rfBench{ctx: context.Background(), work: work}
	if b.s, err = rootfs.Open(filepath.Join(work, "state")); err != nil {
		return nil, err
	}
	b.figs = map[string]any{"warm_runs": rootfsWarmRuns, "cold_runs": rootfsColdRuns}
	if err := b.importImages(guest); err != nil {
		return nil, err
	}
	if err := b.importTar(); err != nil {
		return nil, err
	}
	def, strategies, err := b.strategies()
	if err != nil {
		return nil, err
	}
	if err := b.timeAll(strategies); err != nil {
		return nil, err
	}
	b.ratios(def)
	fmt.Println("   (2 cores shared with other work: medians; copy includes a syncfs, cp -a does not;")
	fmt.Println("    target: default < 50 ms, flat in image size)")
	return b.figs, nil
}

// rfBench is the rootfs bench under way: the store under test in its work
// directory, the images imported into it, and the figures so far.
type rfBench struct {
	ctx    context.Context
	work   string
	s      *rootfs.Store
	images []*rfImage
	figs   map[string]any
	n      int // roots made so far, for their names
}

// rfImage is one of the bench's images: the tree it was imported from.
type rfImage struct {
	label, tree string
	img         *rootfs.Image
}

// importImages imports guest as the small image and, as the large one, guest
// with a second copy of its /usr.
func (b *rfBench) importImages(guest string) error {
	big := filepath.Join(b.work, "big")
	if err := rfRun("cp", "-a", guest, big); err != nil {
		return err
	}
	if err := rfRun("cp", "-a", filepath.Join(guest, "usr"), filepath.Join(big, "usr2")); err != nil {
		return err
	}
	b.images = []*rfImage{{label: "small", tree: guest}, {label: "large", tree: big}}
	for _, im := range b.images {
		start := time.Now()
		var err error
		im.img, err = b.s.Import(b.ctx, "bench-"+im.label, rootfs.Dir{Path: im.tree}, rootfs.ImportOptions{})
		if err != nil {
			return err
		}
		fmt.Printf("   image %s: %s, %d files (import from a directory: %v)\n", im.label, rfHuman(im.img.Size), im.img.Files, time.Since(start).Round(time.Millisecond))
		b.figs["image_"+im.label+"_bytes"] = im.img.Size
		b.figs["image_"+im.label+"_files"] = im.img.Files
	}
	return nil
}

// importTar times the archive import of the small image from the test
// cache's .tar.zst, cold, for the record; without the archive it does nothing.
func (b *rfBench) importTar() error {
	tarball := filepath.Join(testenv.CacheDir(), "debian12-rootfs.tar.zst")
	if !rfExists(tarball) {
		return nil
	}
	rfDropCaches()
	start := time.Now()
	if _, err := b.s.Import(b.ctx, "bench-tar", rootfs.Tar{Location: tarball}, rootfs.ImportOptions{}); err != nil {
		return err
	}
	d := time.Since(start)
	fmt.Printf("   import of the small image as .tar.zst (cold): %v\n", d.Round(time.Millisecond))
	b.figs["import_tar_zst_small_cold_ms"] = ms(d)
	return nil
}

// strategies finds the store's default strategy on this filesystem (by making
// one root with StrategyAuto) and returns it with the strategies to time:
// overlay and copy, the default first when it is neither.
func (b *rfBench) strategies() (rootfs.Strategy, []rootfs.Strategy, error) {
	def, err := b.s.CreateRoot(b.ctx, "bench-probe", b.images[0].img.Digest, rootfs.StrategyAuto)
	if err != nil {
		return "", nil, err
	}
	b.figs["default_strategy"] = string(def.Strategy)
	strategies := []rootfs.Strategy{rootfs.StrategyOverlay, rootfs.StrategyCopy}
	if def.Strategy != rootfs.StrategyOverlay {
		strategies = append([]rootfs.Strategy{def.Strategy}, strategies...)
	}
	return def.Strategy, strategies, nil
}

// timeAll prints the table of root-making times: warm then cold, each image,
// cp -a then each strategy.
func (b *rfBench) timeAll(strategies []rootfs.Strategy) error {
	fmt.Printf("   %-8s %-9s %-6s %10s %10s %10s\n", "image", "method", "cache", "median", "min", "max")
	for _, cold := range []bool{false, true} {
		cache, runs := "warm", rootfsWarmRuns
		if cold {
			cache, runs = "cold", rootfsColdRuns
		}
		for _, im := range b.images {
			methods := append([]string{}, "cp-a")
			for _, st := range strategies {
				methods = append(methods, string(st))
			}
			for _, method := range methods {
				var times []time.Duration
				for i := 0; i < runs; i++ {
					d, err := b.timeOne(im, method, cold, i == 0)
					if err != nil {
						return err
					}
					times = append(times, d)
				}
				med, lo, hi := rfStats(times)
				fmt.Printf("   %-8s %-9s %-6s %10s %10s %10s\n", im.label, method, cache, rfRound(med), rfRound(lo), rfRound(hi))
				b.figs[fmt.Sprintf("%s_%s_%s_ms", strings.ReplaceAll(method, "-", "_"), im.label, cache)] = ms(med)
			}
		}
	}
	return nil
}

// timeOne times making one root from im by method ("cp-a" or a strategy),
// after dropping the caches (cold) or, on a case's first run, warming them.
func (b *rfBench) timeOne(im *rfImage, method string, cold, first bool) (time.Duration, error) {
	b.n++
	// Write back what earlier runs left dirty first: a root's metadata is
	// fsynced, and on ext4 that waits for every other dirty block the journal
	// commit orders before it.
	_ = exec.Command("sync").Run()
	if cold {
		rfDropCaches()
	} else if first {
		rfWarm(im.tree, im.img.Path)
	}
	if method == "cp-a" {
		dst := filepath.Join(b.work, fmt.Sprintf("cp-%d", b.n))
		start := time.Now()
		if err := rfRun("cp", "-a", im.tree, dst); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	start := time.Now()
	if _, err := b.s.CreateRoot(b.ctx, fmt.Sprintf("bench-%d", b.n), im.img.Digest, rootfs.Strategy(method)); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// ratios prints and records how many times faster the default strategy is
// than cp -a, for each image, warm and cold.
func (b *rfBench) ratios(def rootfs.Strategy) {
	for _, cache := range []string{"warm", "cold"} {
		for _, im := range b.images {
			k := func(m string) float64 {
				v, _ := b.figs[fmt.Sprintf("%s_%s_%s_ms", m, im.label, cache)].(float64)
				return v
			}
			if d := k(string(def)); d > 0 {
				r := k("cp_a") / d
				b.figs[fmt.Sprintf("ratio_cp_a_over_default_%s_%s", im.label, cache)] = r
				fmt.Printf("   %s %s: default (%s) %.2f ms, cp -a %.0f ms: %.0f× faster\n", im.label, cache, def, d, k("cp_a"), r)
			}
		}
	}
}

func rfRun(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func rfExists(p string) bool { _, err := os.Stat(p); return err == nil }

// dropCaches writes back dirty data and empties the page, dentry and inode
// caches, so the next step reads from disk.
func rfDropCaches() {
	_ = exec.Command("sync").Run()
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

// warm reads the trees so the warm runs start with them cached (idle page cache
// is evicted after about a minute on this machine).
func rfWarm(trees ...string) {
	for _, t := range trees {
		_ = exec.Command("sh", "-c", `find "$1" -type f -print0 | xargs -0 cat > /dev/null 2>&1`, "sh", t).Run()
	}
}

func rfStats(ds []time.Duration) (med, lo, hi time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[0], s[len(s)-1]
}

func rfRound(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

func rfHuman(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
