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
	work, err := os.MkdirTemp("/var/tmp", "berth-bench-rootfs-")
	if err != nil {
		return nil, err
	}
	defer func() {
		fmt.Println("   cleaning up", work)
		os.RemoveAll(work)
	}()
	ctx := context.Background()
	s, err := rootfs.Open(filepath.Join(work, "state"))
	if err != nil {
		return nil, err
	}
	figs := map[string]any{"warm_runs": rootfsWarmRuns, "cold_runs": rootfsColdRuns}

	// The big image: the guest plus a second copy of its /usr.
	big := filepath.Join(work, "big")
	if err := rfRun("cp", "-a", guest, big); err != nil {
		return nil, err
	}
	if err := rfRun("cp", "-a", filepath.Join(guest, "usr"), filepath.Join(big, "usr2")); err != nil {
		return nil, err
	}
	type image struct {
		label, tree string
		img         *rootfs.Image
	}
	images := []*image{{label: "small", tree: guest}, {label: "large", tree: big}}
	for _, im := range images {
		start := time.Now()
		im.img, err = s.Import(ctx, "bench-"+im.label, rootfs.Dir{Path: im.tree}, rootfs.ImportOptions{})
		if err != nil {
			return nil, err
		}
		fmt.Printf("   image %s: %s, %d files (import from a directory: %v)\n", im.label, rfHuman(im.img.Size), im.img.Files, time.Since(start).Round(time.Millisecond))
		figs["image_"+im.label+"_bytes"] = im.img.Size
		figs["image_"+im.label+"_files"] = im.img.Files
	}
	// The archive import of the 250 MB image, for the record.
	if tarball := filepath.Join(testenv.CacheDir(), "debian12-rootfs.tar.zst"); rfExists(tarball) {
		rfDropCaches()
		start := time.Now()
		if _, err := s.Import(ctx, "bench-tar", rootfs.Tar{Location: tarball}, rootfs.ImportOptions{}); err != nil {
			return nil, err
		}
		d := time.Since(start)
		fmt.Printf("   import of the small image as .tar.zst (cold): %v\n", d.Round(time.Millisecond))
		figs["import_tar_zst_small_cold_ms"] = rfMs(d)
	}

	def, err := s.CreateRoot(ctx, "bench-probe", images[0].img.Digest, rootfs.StrategyAuto)
	if err != nil {
		return nil, err
	}
	figs["default_strategy"] = string(def.Strategy)
	strategies := []rootfs.Strategy{rootfs.StrategyOverlay, rootfs.StrategyCopy}
	if def.Strategy != rootfs.StrategyOverlay {
		strategies = append([]rootfs.Strategy{def.Strategy}, strategies...)
	}

	n := 0
	fmt.Printf("   %-8s %-9s %-6s %10s %10s %10s\n", "image", "method", "cache", "median", "min", "max")
	for _, cold := range []bool{false, true} {
		cache, runs := "warm", rootfsWarmRuns
		if cold {
			cache, runs = "cold", rootfsColdRuns
		}
		for _, im := range images {
			methods := append([]string{}, "cp-a")
			for _, st := range strategies {
				methods = append(methods, string(st))
			}
			for _, method := range methods {
				var times []time.Duration
				for i := 0; i < runs; i++ {
					n++
					// Write back what earlier runs left dirty first: a root's
					// metadata is fsynced, and on ext4 that waits for every
					// other dirty block the journal commit orders before it.
					_ = exec.Command("sync").Run()
					if cold {
						rfDropCaches()
					} else if i == 0 {
						rfWarm(im.tree, im.img.Path)
					}
					var d time.Duration
					if method == "cp-a" {
						dst := filepath.Join(work, fmt.Sprintf("cp-%d", n))
						start := time.Now()
						if err := rfRun("cp", "-a", im.tree, dst); err != nil {
							return nil, err
						}
						d = time.Since(start)
					} else {
						start := time.Now()
						if _, err := s.CreateRoot(ctx, fmt.Sprintf("bench-%d", n), im.img.Digest, rootfs.Strategy(method)); err != nil {
							return nil, err
						}
						d = time.Since(start)
					}
					times = append(times, d)
				}
				med, lo, hi := rfStats(times)
				fmt.Printf("   %-8s %-9s %-6s %10s %10s %10s\n", im.label, method, cache, rfRound(med), rfRound(lo), rfRound(hi))
				figs[fmt.Sprintf("%s_%s_%s_ms", strings.ReplaceAll(method, "-", "_"), im.label, cache)] = rfMs(med)
			}
		}
	}
	for _, cache := range []string{"warm", "cold"} {
		for _, im := range images {
			k := func(m string) float64 {
				v, _ := figs[fmt.Sprintf("%s_%s_%s_ms", m, im.label, cache)].(float64)
				return v
			}
			if d := k(string(def.Strategy)); d > 0 {
				r := k("cp_a") / d
				figs[fmt.Sprintf("ratio_cp_a_over_default_%s_%s", im.label, cache)] = r
				fmt.Printf("   %s %s: default (%s) %.2f ms, cp -a %.0f ms: %.0f× faster\n", im.label, cache, def.Strategy, d, k("cp_a"), r)
			}
		}
	}
	fmt.Println("   (2 cores shared with other work: medians; copy includes a syncfs, cp -a does not;")
	fmt.Println("    target: default < 50 ms, flat in image size)")
	return figs, nil
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

func rfMs(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

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
