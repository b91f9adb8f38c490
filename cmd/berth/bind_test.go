package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
)

// TestBindCommand: berth bind of a relative SRC into a running machine (a
// busybox guest with private users, supervised in this process), DST
// defaulting to SRC's path, -o json's result, and the errors a person gets:
// a machine that is not running, a relative DST, a missing DST without
// --mkdir.
func TestBindCommand(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	runtime, _ := bootRuntimeDir(t)
	name := testenv.UniqueName("bindcli")
	tmp := t.TempDir()
	cfg := container.Config{
		Name: name, UUID: rundir.MachineUUID(name), Boot: true,
		RuntimeDir: rundir.For(runtime, name).Path(), ConsoleLog: filepath.Join(tmp, "console.log"),
		Root:  container.Root{Dir: testenv.BusyboxGuest(t), ReadOnly: true},
		Users: &container.Users{Base: 0x61230000, Size: 65536},
	}
	m := machinetest.Start(t, cfg, container.Hooks{})
	m.WaitPhase(t, container.PhaseRunning, 1)

	share := filepath.Join(tmp, "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(share, "hello"), []byte("hello from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(tmp)
	code, stdout, stderr := run(t, "--runtime-dir", runtime, "bind", name, "share", "/tmp", "-o", "json", "--read-only")
	if code != 0 {
		t.Fatalf("berth bind: exit %d: %s", code, stderr)
	}
	var res container.BindResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("berth bind -o json: %v\n%s", err, stdout)
	}
	if res != (container.BindResult{Machine: name, Source: share, Target: "/tmp", ReadOnly: true, Idmapped: true}) {
		t.Errorf("berth bind -o json: %+v", res)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := container.Enter(ctx, cfg.RuntimeDir, container.EnterOptions{
		Command: []string{"/bin/sh", "-c", "cat /tmp/hello; touch /tmp/x 2>&1"}, Stdout: &out, Stderr: &out}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "hello from the host") || !strings.Contains(out.String(), "Read-only file system") {
		t.Errorf("in the machine: %q", out.String())
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bind", "no-such-machine", share}, `berth: machine "no-such-machine" is not running`},
		{[]string{"bind", name, share, "rel/dst"}, `berth: bind: DST "rel/dst" must be an absolute path in the machine`},
		{[]string{"bind", name, share}, "does not exist in the machine (--mkdir makes it)"},
		{[]string{"bind", name, share, "/tmp", "--read-write"}, "unknown flag: --read-write"},
	} {
		code, _, stderr := run(t, append([]string{"--runtime-dir", runtime}, tc.args...)...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("berth %s: exit %d, stderr %q; want 1 and %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
	}
}
