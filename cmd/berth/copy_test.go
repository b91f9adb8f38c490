package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/safecopy"
	"github.com/berthd/berth/internal/testenv"

	"golang.org/x/sys/unix"
)

// inMachine runs a command in the machine and returns its stdout.
func inMachine(t *testing.T, runDir string, command ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	code, err := container.Enter(context.Background(), runDir, container.EnterOptions{Command: command, Stdout: &out, Stderr: &errb})
	if err != nil || code != 0 {
		t.Fatalf("%v in the machine: %d, %v: %s%s", command, code, err, out.String(), errb.String())
	}
	return strings.TrimSpace(out.String())
}

// TestCopyToFromMachine copies into and out of a busybox machine with private
// users (the default), running and then stopped: owners as the guest and the
// disk see them, the guest's own files back on the host, planted links that
// lead nowhere on the host, and the errors a person gets. Its root is an
// overlay, a directory (idmapped), or a directory shifted on disk (ramfs
// cannot be idmapped).
func TestCopyToFromMachine(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	t.Run("overlay", func(t *testing.T) { copyToFromMachine(t, "overlay", t.TempDir(), false) })
	t.Run("copy", func(t *testing.T) { copyToFromMachine(t, "copy", t.TempDir(), false) })
	t.Run("shifted", func(t *testing.T) { copyToFromMachine(t, "copy", testenv.MountFS(t, "ramfs", ""), true) })
}

func copyToFromMachine(t *testing.T, strategy, state string, shifted bool) {
	// Directories of its own, as flags: their defaults were read when the
	// command line was made, and another test's flags may linger until the
	// next run resets them.
	runtime, err := os.MkdirTemp("/run", "berth-copy-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runtime) })
	run := func(t *testing.T, args ...string) (int, string, string) {
		t.Helper()
		return run(t, append([]string{"--state-dir", state, "--runtime-dir", runtime}, args...)...)
	}
	name := testenv.UniqueName("cp")
	defs := t.TempDir()
	for f, doc := range map[string]string{
		"i.yaml": "apiVersion: berth/v1\nkind: Image\nname: bb\ndirectory: " + testenv.BusyboxGuest(t) + "\n",
		"m.yaml": "apiVersion: berth/v1\nkind: Machine\nname: " + name + "\nimage: bb\nroot: {strategy: " + strategy + "}\n",
	} {
		if err := os.WriteFile(filepath.Join(defs, f), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	runDir := rundir.For(runtime, name).Path()
	t.Cleanup(func() {
		run(t, "stop", name)
		// The root and every record are in the test's state directory.
		_ = container.WaitSupervisorGone(context.Background(), runDir, 20*time.Second)
		os.Remove(rundir.ConsoleLog(cliPaths().LogDir, name))
	})
	if code, out, errs := run(t, "apply", defs); code != 0 {
		t.Fatalf("apply = %d:\n%s%s", code, out, errs)
	}
	var st container.State
	testenv.Eventually(t, 20*time.Second, func() error {
		var err error
		if st, err = container.ReadState(runDir); err == nil && st.Phase != container.PhaseRunning {
			err = fmt.Errorf("phase %s", st.Phase)
		}
		return err
	})
	if st.Users == nil || st.Users.Shifted != shifted {
		t.Fatalf("the machine's users: %+v, want a range, shifted %v", st.Users, shifted)
	}
	// Where the root's files are on disk, and the owner there of the
	// machine's user N.
	tree := filepath.Join(state, "machines", name, "rootfs")
	if strategy == "overlay" {
		tree = filepath.Join(state, "machines", name, "upper")
	}
	onDisk := func(n uint32) uint32 {
		if shifted {
			return st.Users.Base + n
		}
		return n
	}

	host := t.TempDir()
	site := filepath.Join(host, "site")
	if err := os.MkdirAll(filepath.Join(site, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(site, "index.html"), []byte("hello"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(site, "index.html"), 1000, 1001); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../index.html", filepath.Join(site, "sub/link")); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(host, "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("running", func(t *testing.T) {
		code, out, errs := run(t, "-o", "json", "copy-to", name, site, "/")
		if code != 0 {
			t.Fatalf("copy-to = %d:\n%s%s", code, out, errs)
		}
		var sum safecopy.Summary
		if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Files != 1 || sum.Dirs != 2 || sum.Symlinks != 1 || sum.Destination != name+":/site" {
			t.Errorf("summary %s (%v)", out, err)
		}
		if got := inMachine(t, runDir, "stat", "-c", "%u:%g:%a", "/site/index.html"); got != "1000:1001:640" {
			t.Errorf("inside, index.html is %s, want 1000:1001:640", got)
		}
		if got := inMachine(t, runDir, "cat", "/site/sub/link"); got != "hello" {
			t.Errorf("inside, the link reads %q", got)
		}
		// The disk holds the machine's own IDs, or the range's when shifted.
		var ds unix.Stat_t
		if err := unix.Lstat(filepath.Join(tree, "site/index.html"), &ds); err != nil || ds.Uid != onDisk(1000) {
			t.Errorf("on disk: uid %d, %v; want %d", ds.Uid, err, onDisk(1000))
		}
		// Into the guest's own tmpfs /tmp, through its mounts.
		if code, out, errs := run(t, "copy-to", name, filepath.Join(site, "index.html"), "/tmp/i"); code != 0 {
			t.Fatalf("copy-to /tmp = %d:\n%s%s", code, out, errs)
		}
		if got := inMachine(t, runDir, "stat", "-c", "%u:%s", "/tmp/i"); got != "1000:5" {
			t.Errorf("inside, /tmp/i is %s", got)
		}

		// What the guest made comes out with its owner.
		inMachine(t, runDir, "sh", "-c", "echo guest > /tmp/g && chown 123:456 /tmp/g && chmod 4755 /tmp/g && ln -s "+host+" /hostlink && ln -s / /up")
		out1 := filepath.Join(t.TempDir(), "g")
		if code, out, errs := run(t, "copy-from", name, "/tmp/g", out1); code != 0 {
			t.Fatalf("copy-from = %d:\n%s%s", code, out, errs)
		}
		var hs unix.Stat_t
		if err := unix.Lstat(out1, &hs); err != nil || hs.Uid != 123 || hs.Gid != 456 || hs.Mode&0o7777 != 0o755 {
			t.Errorf("copied out: %d:%d %o, %v; want 123:456 755 (set-user-ID cleared)", hs.Uid, hs.Gid, hs.Mode&0o7777, err)
		}
		// Links the guest planted resolve in the machine, never on the host.
		for _, p := range []string{"/hostlink/secret", "/up" + host + "/secret", "/../../.." + secret} {
			code, _, errs := run(t, "copy-from", name, p, filepath.Join(t.TempDir(), "x"))
			if code != 1 || !strings.Contains(errs, name+":") {
				t.Errorf("copy-from %s = %d, want 1 naming the machine: %s", p, code, errs)
			}
		}
		code, _, errs = run(t, "copy-to", name, filepath.Join(site, "index.html"), "/hostlink/")
		if code != 1 || !strings.Contains(errs, "no such directory in the machine") {
			t.Errorf("copy-to /hostlink/ = %d: %s", code, errs)
		}
		if ents, _ := os.ReadDir(host); len(ents) != 2 {
			t.Errorf("the host directory changed: %v", ents)
		}
		code, _, errs = run(t, "copy-to", name, filepath.Join(site, "index.html"), "/site/index.html")
		if code != 1 || !strings.Contains(errs, "use --force") {
			t.Errorf("copy-to over a file = %d: %s", code, errs)
		}
	})

	if code, out, errs := run(t, "stop", name); code != 0 {
		t.Fatalf("stop = %d:\n%s%s", code, out, errs)
	}
	if err := container.WaitSupervisorGone(context.Background(), runDir, 20*time.Second); err != nil {
		t.Fatal(err)
	}

	t.Run("stopped", func(t *testing.T) {
		if code, out, errs := run(t, "copy-to", name, site, "/site2"); code != 0 {
			t.Fatalf("copy-to a stopped machine = %d:\n%s%s", code, out, errs)
		}
		var ds unix.Stat_t
		if err := unix.Lstat(filepath.Join(tree, "site2/index.html"), &ds); err != nil || ds.Uid != onDisk(1000) || ds.Gid != onDisk(1001) {
			t.Errorf("on disk: %d:%d, %v; want %d:%d", ds.Uid, ds.Gid, err, onDisk(1000), onDisk(1001))
		}
		out := filepath.Join(t.TempDir(), "back")
		if code, o, errs := run(t, "copy-from", name, "/site", out); code != 0 {
			t.Fatalf("copy-from a stopped machine = %d:\n%s%s", code, o, errs)
		}
		var hs unix.Stat_t
		if err := unix.Lstat(filepath.Join(out, "index.html"), &hs); err != nil || hs.Uid != 1000 {
			t.Errorf("copied out of the stopped machine: uid %d, %v", hs.Uid, err)
		}
		// Nothing stays mounted, and the root lock is free again.
		if mi, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mi, []byte(filepath.Join(state, "machines", name))) {
			t.Errorf("a mount of the root stayed")
		}
		code, _, errs := run(t, "copy-from", name, "/nothing", t.TempDir())
		if code != 1 || !strings.Contains(errs, name+":/nothing: no such file") {
			t.Errorf("copy-from a missing file = %d: %s", code, errs)
		}
	})

	code, _, errs := run(t, "copy-to", "no-such-machine", site, "/")
	if code != 1 || !strings.Contains(errs, `machine "no-such-machine" is not running and has no root`) {
		t.Errorf("copy-to an unknown machine = %d: %s", code, errs)
	}
}

// TestCopyWithBerthd: a machine berthd started is copied to and from by the
// CLI alone, running and stopped (its root found in berthd's state
// directory, which the CLI learns from berthd).
func TestCopyWithBerthd(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	p := startBerthd(t)
	name := testenv.UniqueName("cpd")
	defs := filepath.Join(filepath.Dir(p.RuntimeDir), "defs")
	if err := os.MkdirAll(defs, 0o755); err != nil {
		t.Fatal(err)
	}
	doc := "apiVersion: berth/v1\nkind: Image\nname: bb\ndirectory: " + testenv.BusyboxGuest(t) +
		"\n---\napiVersion: berth/v1\nkind: Machine\nname: " + name + "\nimage: bb\n"
	if err := os.WriteFile(filepath.Join(defs, "m.yaml"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	runDir := rundir.For(p.RuntimeDir, name).Path()
	t.Cleanup(func() {
		run(t, "--runtime-dir", p.RuntimeDir, "stop", name)
		_ = container.WaitSupervisorGone(context.Background(), runDir, 20*time.Second)
		os.Remove(rundir.ConsoleLog(p.LogDir, name))
	})
	if code, out, errs := run(t, "--runtime-dir", p.RuntimeDir, "apply", defs); code != 0 {
		t.Fatalf("apply = %d:\n%s%s", code, out, errs)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		st, err := container.ReadState(runDir)
		if err == nil && st.Phase != container.PhaseRunning {
			err = fmt.Errorf("phase %s", st.Phase)
		}
		return err
	})
	src := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(src, []byte("through berthd"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := run(t, "--runtime-dir", p.RuntimeDir, "copy-to", name, src, "/f"); code != 0 {
		t.Fatalf("copy-to = %d:\n%s%s", code, out, errs)
	}
	if got := inMachine(t, runDir, "cat", "/f"); got != "through berthd" {
		t.Errorf("inside: %q", got)
	}
	if code, out, errs := run(t, "--runtime-dir", p.RuntimeDir, "stop", name); code != 0 {
		t.Fatalf("stop = %d:\n%s%s", code, out, errs)
	}
	if err := container.WaitSupervisorGone(context.Background(), runDir, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "f")
	if code, o, errs := run(t, "--runtime-dir", p.RuntimeDir, "copy-from", name, "/f", out); code != 0 {
		t.Fatalf("copy-from the stopped machine = %d:\n%s%s", code, o, errs)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "through berthd" {
		t.Errorf("copied out %q, %v", b, err)
	}
}

// TestCopyCompletion: the host's side of a copy completes as files, the
// machine's side does not (a host file name there would mislead).
func TestCopyCompletion(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"copy-to", "web", "./s"}, ":0"},
		{[]string{"copy-to", "web", "./s", "/e"}, ":4"},
		{[]string{"copy-from", "web", "/e"}, ":4"},
		{[]string{"copy-from", "web", "/etc", "./o"}, ":0"},
	} {
		_, out, _ := run(t, append([]string{"__complete"}, c.args...)...)
		if !strings.Contains(out, c.want+"\n") {
			t.Errorf("%v: %q, want directive %s", c.args, out, c.want)
		}
	}
}
