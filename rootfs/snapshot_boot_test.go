package rootfs_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
	"github.com/berthd/berth/rootfs"
)

// TestSnapshotMachine runs a busybox machine on an overlay root: what it
// wrote before a snapshot is what it finds after a restore, and what it wrote
// after is gone; while the machine runs (its supervisor holds the root lock)
// a snapshot and a restore are refused with "stop it", and a clone of the
// snapshot is not.
func TestSnapshotMachine(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := t.Context()
	s, err := rootfs.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, "bb", rootfs.Dir{Path: testenv.BusyboxGuest(t)}, rootfs.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	name := testenv.UniqueName("snap")
	r, err := s.CreateRoot(ctx, name, "bb", rootfs.StrategyOverlay)
	if err != nil {
		t.Fatal(err)
	}
	runDir, err := os.MkdirTemp("/run", "berth-snapshot-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	// run runs script in the machine, its root locked as its supervisor's
	// is, and returns the console; wait false returns once it runs.
	run := func(script string, wait bool) (*machinetest.Machine, *rootfs.RootLock) {
		t.Helper()
		lock, err := s.LockRoot(name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := machineConfig(r, runDir)
		cfg.Args = []string{"/bin/sh", "-c", script}
		m := machinetest.Start(t, cfg, container.Hooks{})
		if !wait {
			m.WaitPhase(t, container.PhaseRunning, 1)
			return m, lock
		}
		ex, err := m.Wait(t)
		console, _ := os.ReadFile(cfg.ConsoleLog)
		if err != nil || ex.Code != 0 {
			t.Fatalf("machine ended %+v, %v; console:\n%s", ex, err, console)
		}
		lock.Unlock()
		return nil, nil
	}
	run(`echo before > /root/f; rm /bin/true; sync`, true)
	if _, err := s.CreateSnapshot(ctx, name, "s1"); err != nil {
		t.Fatal(err)
	}

	m, lock := run(`echo after > /root/f; echo new > /root/g; sync; exec sleep 300`, false)
	if _, err := s.CreateSnapshot(ctx, name, "s2"); !errors.Is(err, rootfs.ErrBusy) || !strings.Contains(err.Error(), "stop it before you snapshot it") {
		t.Errorf("snapshot of a running machine = %v, want ErrBusy", err)
	}
	if _, err := s.RestoreSnapshot(ctx, name, "s1"); !errors.Is(err, rootfs.ErrBusy) || !strings.Contains(err.Error(), "stop it before you restore") {
		t.Errorf("restore onto a running machine = %v, want ErrBusy", err)
	}
	c, err := s.CloneSnapshot(ctx, name, "s1", name+"-c")
	if err != nil {
		t.Errorf("clone of a running machine's snapshot: %v", err)
	} else if b, _ := os.ReadFile(filepath.Join(c.Overlay.Upper, "root/f")); string(b) != "before\n" {
		t.Errorf("clone's /root/f = %q", b)
	}
	cl, err := container.Dial(runDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Terminate(ctx); err != nil {
		t.Fatal(err)
	}
	m.Wait(t)
	lock.Unlock()

	if _, err := s.RestoreSnapshot(ctx, name, "s1"); err != nil {
		t.Fatal(err)
	}
	run(`set -e; test "$(cat /root/f)" = before; test ! -e /root/g; test ! -e /bin/true`, true)
	for _, m := range []string{name, name + "-c"} {
		if _, err := s.RemoveRoot(m, true); err != nil {
			t.Error(err)
		}
	}
	if _, err := s.RemoveSnapshot(name, "s1"); err != nil {
		t.Error(err)
	}
}
