package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
	"github.com/berthd/berth/internal/userns"
)

func TestParseBind(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want container.Mount
		err  bool
	}{
		{"/srv/data", container.Mount{Type: "bind", Source: "/srv/data", Target: "/srv/data", Idmap: true}, false},
		{"/srv/data:/data", container.Mount{Type: "bind", Source: "/srv/data", Target: "/data", Idmap: true}, false},
		{"/srv/data:/data:ro", container.Mount{Type: "bind", Source: "/srv/data", Target: "/data", ReadOnly: true, Idmap: true}, false},
		{"/srv/data:/data:rw", container.Mount{Type: "bind", Source: "/srv/data", Target: "/data", Idmap: true}, false},
		{"/srv/data:/data:ro,noidmap", container.Mount{Type: "bind", Source: "/srv/data", Target: "/data", ReadOnly: true}, false},
		{"/srv/data:/data:idmap", container.Mount{Type: "bind", Source: "/srv/data", Target: "/data", Idmap: true}, false},
		{"/srv/data:/data:rx", container.Mount{}, true},
		{"/srv/data:data", container.Mount{}, true},
		{"/a:/b:ro:x", container.Mount{}, true},
	} {
		got, err := parseBind(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("parseBind(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

// TestBootMemoryMax reads --memory-max through spec.ParseSize, as definitions
// read memoryMax, and refuses a limit of zero as they do.
func TestBootMemoryMax(t *testing.T) {
	saved := bootFlags
	t.Cleanup(func() { bootFlags = saved })
	for in, want := range map[string]int64{"512M": 512 << 20, "2G": 2 << 30, "1.5G": 3 << 29, "1048576": 1 << 20, "64k": 64 << 10, "1GB": 1 << 30, "": 0} {
		bootFlags.dir, bootFlags.memoryMax = t.TempDir(), in
		if cfg, err := bootConfig(nil); err != nil || cfg.Resources.MemoryMax != want {
			t.Errorf("--memory-max %q = %d, %v; want %d", in, cfg.Resources.MemoryMax, err, want)
		}
	}
	for _, bad := range []string{"-1", "lots", "0", "0.1"} {
		bootFlags.dir, bootFlags.memoryMax = t.TempDir(), bad
		if _, err := bootConfig(nil); err == nil || !strings.Contains(err.Error(), "--memory-max") {
			t.Errorf("--memory-max %q: %v; want an error naming the flag", bad, err)
		}
	}
}

func TestMachineID(t *testing.T) {
	dir := t.TempDir()
	a, err := machineID("", dir, "web")
	if err != nil || len(a) != 32 {
		t.Fatal(a, err)
	}
	if b, _ := machineID("", dir, "web"); b != a {
		t.Error("the derived ID must be stable")
	}
	if b, _ := machineID("", dir, "db"); b == a {
		t.Error("different names must get different IDs")
	}
	os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc/machine-id"), []byte("0123456789abcdef0123456789abcdef\n"), 0o444)
	if b, _ := machineID("", dir, "web"); b != "0123456789abcdef0123456789abcdef" {
		t.Errorf("the tree's /etc/machine-id should win: %s", b)
	}
	if b, _ := machineID("01234567-89AB-CDEF-0123-456789ABCDEF", dir, "web"); b != "0123456789abcdef0123456789abcdef" {
		t.Errorf("flag: %s", b)
	}
	if _, err := machineID("nope", dir, "web"); err == nil {
		t.Error("bad flag accepted")
	}
}

// The test binary is also the machine's init stage (berth re-executes itself).
func TestMain(m *testing.M) {
	container.Reexec()
	// The tests never talk to a berthd of this host's own (on
	// /run/berth/berthd.sock) unless they say so with --runtime-dir: a
	// runtime directory of their own, short for its sockets.
	run, err := os.MkdirTemp("/run", "berth-cmd-test-")
	if err != nil {
		run, _ = os.MkdirTemp("", "berth-cmd-test-")
	}
	os.Setenv("BERTH_RUNTIME_DIR", run)
	code := m.Run()
	os.RemoveAll(run)
	os.Exit(code)
}

// bootRuntimeDir makes a berth runtime directory for a test (short: it holds
// unix sockets) with a file in it that no boot may remove, and a state
// directory of the test's own (the machines' UID ranges go there, not into
// this host's).
func bootRuntimeDir(t *testing.T) (dir, keep string) {
	t.Helper()
	t.Setenv("BERTH_STATE_DIR", t.TempDir())
	dir, err := os.MkdirTemp("/run", "berth-boot-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	keep = filepath.Join(dir, "keep")
	if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, keep
}

// TestBootCommand runs `berth boot` in-process on the busybox guest: an
// application's exit code and files, a boot stopped over the control socket,
// a second boot of a running machine refused, and berth's runtime directory
// (the global --runtime-dir, given before or after the verb) left alone: only
// RUNTIME/machines/NAME is the machine's, and it goes when the machine ends.
func TestBootCommand(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root := testenv.BusyboxGuest(t)
	name := testenv.UniqueName("boot")
	run1, keep := bootRuntimeDir(t)
	mdir := rundir.For(run1, name).Path()
	logf := filepath.Join(t.TempDir(), "console.log")
	out := t.TempDir()
	intact := func(when string) {
		t.Helper()
		if b, err := os.ReadFile(keep); err != nil || string(b) != "mine" {
			t.Fatalf("%s: berth's runtime directory lost %s: %v", when, keep, err)
		}
		if _, err := os.Stat(mdir); !os.IsNotExist(err) {
			t.Errorf("%s: machine runtime dir left behind: %v", when, err)
		}
	}

	code, _, stderr := run(t, "--runtime-dir", run1, "boot", "-D", root, "--name", name, "--console-log", logf,
		"--read-only", "--bind", out+":/out", "--hostname", "app-host", "--", "/bin/sh", "-c", "hostname > /out/h; exit 7")
	if code != 7 {
		t.Fatalf("application exit: %d, want 7 (stderr %q)", code, stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "h")); string(b) != "app-host\n" {
		t.Errorf("file written through the bind mount: %q", b)
	}
	intact("after an application")
	// The one-off boot's range is forgotten: its tree stays owned 0…65535.
	if all, err := userns.Open(os.Getenv("BERTH_STATE_DIR")).All(); err != nil || len(all) != 0 {
		t.Errorf("UID ranges kept after berth boot ended: %v, %v", all, err)
	}

	done := make(chan int, 1)
	go func() {
		code, _, _ := run(t, "boot", "-D", root, "--name", name, "--runtime-dir", run1, "--console-log", logf, "--read-only")
		done <- code
	}()
	if st := machinetest.WaitPhase(t, mdir, container.PhaseRunning, 1); st.Init != "busybox" {
		t.Fatalf("state: %+v", st)
	}
	// A second boot of the running machine is refused and leaves the running
	// one alone (its runtime directory included).
	if code, _, _ := run(t, "boot", "-D", root, "--name", name, "--runtime-dir", run1); code != 1 {
		t.Errorf("second boot: exit %d, want 1", code)
	}
	if st2, err := container.ReadState(mdir); err != nil || st2.Phase != container.PhaseRunning || !st2.SupervisorAlive() {
		t.Errorf("the running machine after a refused second boot: %+v, %v", st2, err)
	}
	c, err := container.Dial(mdir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Poweroff(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("boot after poweroff: exit %d, want 0", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("berth boot did not end after poweroff")
	}
	intact("after a boot")
	if b, _ := os.ReadFile(logf); !strings.Contains(string(b), "berth-busybox-shutdown") {
		t.Errorf("console log: %q", b)
	}
	for _, d := range testenv.CgroupDirs(t, "/berth/"+name) {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup left: %s", d)
		}
	}
}

// TestBootRuntimeDirNotOurs: a machine directory that boot did not make (one
// berthd keeps, with files of its own) outlives the boot; one that is a
// symlink is refused and what it points to is untouched.
func TestBootRuntimeDirNotOurs(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root := testenv.BusyboxGuest(t)
	run1, _ := bootRuntimeDir(t)
	logf := filepath.Join(t.TempDir(), "console.log")

	name := testenv.UniqueName("boot")
	mdir := rundir.For(run1, name).Path()
	if err := os.MkdirAll(mdir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(mdir, "config.json")
	if err := os.WriteFile(cfgFile, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := run(t, "--runtime-dir", run1, "boot", "-D", root, "--name", name, "--console-log", logf, "--", "/bin/true"); code != 0 {
		t.Fatalf("boot in an existing directory: exit %d (%s)", code, stderr)
	}
	if _, err := os.Stat(cfgFile); err != nil {
		t.Errorf("a file boot did not make was removed: %v", err)
	}

	name = testenv.UniqueName("boot")
	elsewhere := t.TempDir()
	if err := os.WriteFile(filepath.Join(elsewhere, "data"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, rundir.For(run1, name).Path()); err != nil {
		t.Fatal(err)
	}
	code, _, _ := run(t, "--runtime-dir", run1, "boot", "-D", root, "--name", name, "--console-log", logf, "--", "/bin/true")
	if code != 1 {
		t.Errorf("boot through a symlinked runtime directory: exit %d, want 1", code)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, "data")); err != nil {
		t.Errorf("the symlink's target lost a file: %v", err)
	}
}

// TestBootTun: a machine of berth boot has /dev/net/tun (as under nspawn), and
// a tun interface can be made in its own network namespace.
func TestBootTun(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root := testenv.BusyboxGuest(t)
	run1, _ := bootRuntimeDir(t)
	code, _, stderr := run(t, "--runtime-dir", run1, "boot", "-D", root, "--name", testenv.UniqueName("tun"),
		"--console-log", filepath.Join(t.TempDir(), "console.log"), "--",
		"/bin/sh", "-c", "test -c /dev/net/tun && tunctl -t tun0 >/dev/null && ip link show tun0 >/dev/null")
	if code != 0 {
		t.Errorf("making a tun interface inside the machine: exit %d (stderr %q)", code, stderr)
	}
}
