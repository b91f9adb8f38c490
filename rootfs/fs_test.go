package rootfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// loopFS makes a filesystem of type fstype on a sparse file attached to a loop
// device and mounts it under a temporary directory, all undone at the end.
func loopFS(t *testing.T, fstype string, mkfsArgs ...string) string {
	t.Helper()
	testenv.SkipUnlessRoot(t)
	testenv.RequireCommand(t, "mkfs."+fstype, "losetup")
	img := filepath.Join(t.TempDir(), fstype+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(2 << 30)
	f.Close()
	if out, err := exec.Command("mkfs."+fstype, append(mkfsArgs, img)...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.%s: %v\n%s", fstype, err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", fstype, dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", fstype, err, out)
	}
	t.Cleanup(func() {
		if exec.Command("umount", mnt).Run() != nil {
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	return mnt
}

// TestStrategiesOnOtherFilesystems checks auto's choice and every strategy on
// btrfs (snapshots) and xfs (reflinks), with a real Debian tree: each root is
// exactly the image, is independent of it, and is removed cleanly.
func TestStrategiesOnOtherFilesystems(t *testing.T) {
	testenv.SkipIfShort(t)
	for _, tc := range []struct {
		fstype string
		mkfs   []string
		auto   Strategy
		others []Strategy
	}{
		{"btrfs", []string{"-q"}, StrategyBtrfs, []Strategy{StrategyReflink, StrategyOverlay, StrategyCopy}},
		{"xfs", []string{"-q", "-m", "reflink=1"}, StrategyReflink, []Strategy{StrategyOverlay, StrategyCopy}},
	} {
		t.Run(tc.fstype, func(t *testing.T) {
			tree := testenv.DebianGuest(t)
			mnt := loopFS(t, tc.fstype, tc.mkfs...)
			ctx := ctxT(t)
			s := openStoreAt(t, filepath.Join(mnt, "state"))
			img, err := s.Import(ctx, "deb", Dir{Path: tree}, ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.fstype == "btrfs" && !isSubvolume(img.Path) {
				t.Error("on btrfs the image is not a subvolume")
			}
			for i, want := range append([]Strategy{StrategyAuto}, tc.others...) {
				m := "m" + string(rune('a'+i))
				start := time.Now()
				r, err := s.CreateRoot(ctx, m, "deb", want)
				if err != nil {
					t.Fatalf("%s: %v", want, err)
				}
				took := time.Since(start)
				if want == StrategyAuto && r.Strategy != tc.auto {
					t.Errorf("auto chose %s on %s, want %s", r.Strategy, tc.fstype, tc.auto)
				}
				t.Logf("%s root (%s) made in %v", r.Strategy, want, took.Round(time.Microsecond))
				if r.Dir != "" {
					if sum, err := treeDigest(ctx, r.Dir, nil); err != nil || sum.digest != img.Digest {
						t.Errorf("%s root differs from the image: %s (%v)", r.Strategy, sum.digest, err)
					}
					writeFile(t, filepath.Join(r.Dir, "etc/hostname"), []byte(m))
					if b, _ := os.ReadFile(filepath.Join(img.Path, "etc/hostname")); string(b) == m {
						t.Errorf("%s root shares data with the image", r.Strategy)
					}
				}
			}
			// Clone by the source's strategy.
			c, err := s.CloneRoot(ctx, "ma", "clone")
			if err != nil || c.Strategy != tc.auto {
				t.Fatalf("clone = %+v, %v", c, err)
			}
			if b, _ := os.ReadFile(filepath.Join(c.Dir, "etc/hostname")); string(b) != "ma" {
				t.Errorf("clone lost ma's change: %q", b)
			}
			roots, _ := s.Roots()
			for _, r := range roots {
				if _, err := s.RemoveRoot(r.Machine, true); err != nil {
					t.Errorf("remove %s (%s): %v", r.Machine, r.Strategy, err)
				}
			}
			if _, err := s.RemoveImage("deb"); err != nil {
				t.Fatal(err)
			}
			assertClean(t, s)
			ents, _ := os.ReadDir(filepath.Join(s.Dir(), "machines"))
			if len(ents) != 1 { // .tmp
				t.Errorf("machines dir holds %d entries", len(ents))
			}
		})
	}
}
