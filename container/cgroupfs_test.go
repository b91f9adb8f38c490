package container_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
)

// cgroupParentEnv names the cgroup parent of the "test-supervise-fresh" stage:
// a parent no machine has used yet, as /berth is on a host where berth never
// ran.
const cgroupParentEnv = "BERTH_TEST_CGROUP_PARENT"

func init() {
	container.RegisterStage("test-supervise-fresh", func() {
		container.SuperviseStage(func(ctx context.Context, cfg container.Config) (container.Hooks, error) {
			return container.Hooks{Cgroups: container.CgroupfsDriver{Parent: os.Getenv(cgroupParentEnv)}}, nil
		})
	})
}

// TestFirstStartRace starts eight machines at once, each in its own detached
// supervisor (as berthd does), on a cgroup parent that does not exist yet in
// any hierarchy: the first start on a fresh host. One supervisor makes the
// parent while the others find it made but, on a v1 cpuset hierarchy, not
// yet filled; every machine must start all the same.
func TestFirstStartRace(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root := testenv.BusyboxGuest(t)
	parent := "/" + testenv.UniqueName("berth-race")
	t.Setenv(cgroupParentEnv, parent)
	dirs := testenv.CgroupDirs(t, parent)
	t.Cleanup(func() {
		for _, d := range dirs {
			_ = syscall.Rmdir(d)
		}
	})
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			t.Fatalf("%s exists already", d)
		}
	}
	// The moment the race opens, made deterministic: another start has just
	// made the parent in the v1 cpuset hierarchy and not yet given it CPUs
	// and memory nodes (a new v1 cpuset cgroup starts empty). The parent in
	// the other hierarchies is left to the machines to make, concurrently.
	for _, d := range dirs {
		if filepath.Base(filepath.Dir(d)) == "cpuset" {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	const n = 8
	cfgs := make([]container.Config, n)
	for i := range cfgs {
		cfgs[i] = newConfig(t, "race")
		cfgs[i].Boot = true
		cfgs[i].Root = container.Root{Dir: root, ReadOnly: true}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	errs := make([]error, n)
	pids := make([]int, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			pids[i], errs[i] = container.SpawnDetached(ctx, cfgs[i], "test-supervise-fresh")
		}()
	}
	close(gate)
	wg.Wait()
	for i, cfg := range cfgs {
		t.Cleanup(func() {
			if st, err := container.ReadState(cfg.RuntimeDir); err == nil && st.SupervisorAlive() {
				_ = syscall.Kill(st.SupervisorPID, syscall.SIGKILL)
				_ = container.WaitSupervisorGone(context.Background(), cfg.RuntimeDir, 10*time.Second)
			}
		})
		if errs[i] != nil {
			t.Errorf("machine %d of %d did not start: %v", i+1, n, errs[i])
		}
	}
	if t.Failed() {
		return
	}
	for _, cfg := range cfgs {
		c, err := container.Dial(cfg.RuntimeDir)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Poweroff(ctx); err != nil {
			t.Errorf("poweroff %s: %v", cfg.Name, err)
		}
	}
	for _, cfg := range cfgs {
		c, err := container.Dial(cfg.RuntimeDir)
		if err != nil {
			continue // already gone
		}
		if ex, err := c.Wait(ctx); err != nil || ex.Reason != container.ReasonPoweroff {
			t.Errorf("%s ended: %v, %v", cfg.Name, ex, err)
		}
	}
	for _, cfg := range cfgs {
		if err := container.WaitSupervisorGone(ctx, cfg.RuntimeDir, 10*time.Second); err != nil {
			t.Error(err)
		}
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, cfg.Name)); err == nil {
				t.Errorf("cgroup %s left behind", filepath.Join(d, cfg.Name))
			}
		}
	}
}

// TestFailedStartLeavesNoCgroup starts a machine whose limit the kernel
// refuses: the error names the machine and the file, and no cgroup of it is
// left in any hierarchy.
func TestFailedStartLeavesNoCgroup(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	if !testenv.HasController(t, "cpu") {
		t.Skip("skipping: this host has no cpu controller to refuse the limit")
	}
	parent := "/" + testenv.UniqueName("berth-fail")
	t.Setenv(cgroupParentEnv, parent)
	dirs := testenv.CgroupDirs(t, parent)
	t.Cleanup(func() {
		for _, d := range dirs {
			_ = syscall.Rmdir(d)
		}
	})
	cfg := newConfig(t, "badlimit")
	cfg.Boot = true
	cfg.Root = container.Root{Dir: testenv.BusyboxGuest(t), ReadOnly: true}
	cfg.Resources.CPUs = 0.001 // a quota of 100 µs per 100 ms: below the kernel's 1 ms minimum
	_, err := container.SpawnDetached(context.Background(), cfg, "test-supervise-fresh")
	if err == nil {
		t.Fatal("a CPU quota the kernel refuses was accepted")
	}
	if !strings.Contains(err.Error(), `machine "`+cfg.Name+`"`) || !strings.Contains(err.Error(), "cpu") || !strings.Contains(err.Error(), "write") {
		t.Errorf("the error does not name the machine and the file: %v", err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, cfg.Name)); err == nil {
			t.Errorf("cgroup %s left behind", filepath.Join(d, cfg.Name))
		}
	}
	if l := leaks(t, cfg); len(l) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
	}
}
