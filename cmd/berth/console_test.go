package main

import (
	"context"
	"fmt"
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

// TestConsoleAndLoginNotRunning: both verbs name a machine that does not
// exist (as berth status does), and refuse a name that is no machine name.
func TestConsoleAndLoginNotRunning(t *testing.T) {
	for _, verb := range [][]string{{"console"}, {"console", "--read-only"}, {"login"}} {
		code, _, stderr := run(t, append(verb, "no-such-machine")...)
		if code != 1 || !strings.Contains(stderr, `machine "no-such-machine": not found`) {
			t.Errorf("berth %s no-such-machine: exit %d, %q", strings.Join(verb, " "), code, stderr)
		}
		if code, _, _ := run(t, append(verb, "../x")...); code != 1 {
			t.Errorf("berth %s ../x: exit %d", strings.Join(verb, " "), code)
		}
	}
}

// TestConsolePipe runs berth console without a terminal on a busybox guest
// whose console is a root shell: what stdin says is typed into the console,
// the console is printed, the end of stdin gives up writing (another writer
// may then attach) while berth goes on printing, and berth returns when the
// machine stops, saying how it ended.
func TestConsolePipe(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	tmp := t.TempDir()
	for _, d := range []string{"upper/etc", "work"} {
		if err := os.MkdirAll(filepath.Join(tmp, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inittab := "::sysinit:/etc/init.d/rcS\n::respawn:-/bin/sh\n::shutdown:/bin/echo berth-busybox-shutdown\n"
	if err := os.WriteFile(filepath.Join(tmp, "upper/etc/inittab"), []byte(inittab), 0o644); err != nil {
		t.Fatal(err)
	}
	name := testenv.UniqueName("con")
	cfg := container.Config{
		Name: name, UUID: strings.Repeat("cd", 12) + fmt.Sprintf("%08x", time.Now().UnixNano()&0xffffffff), Boot: true,
		Root:        container.Root{Overlay: &container.Overlay{Lower: []string{testenv.BusyboxGuest(t)}, Upper: filepath.Join(tmp, "upper"), Work: filepath.Join(tmp, "work")}},
		RuntimeDir:  rundir.For(os.Getenv("BERTH_RUNTIME_DIR"), name).Path(),
		ConsoleLog:  filepath.Join(tmp, "console.log"),
		StopTimeout: 10 * time.Second,
	}
	m := machinetest.Start(t, cfg, container.Hooks{})
	m.WaitPhase(t, container.PhaseRunning, 1)

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdin
	os.Stdin = r
	t.Cleanup(func() { os.Stdin = saved; r.Close() })
	if _, err := w.WriteString("echo pi$((3+4))pe\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, stdout, stderr := run(t, "console", name)
		done <- result{code, stdout, stderr}
	}()
	testenv.Eventually(t, 20*time.Second, func() error {
		if b, _ := os.ReadFile(cfg.ConsoleLog); !strings.Contains(string(b), "pi7pe") {
			return fmt.Errorf("the console shows no pi7pe:\n%s", b)
		}
		return nil
	})
	c, err := container.Dial(cfg.RuntimeDir)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		conn, at, err := c.AttachConsole(context.Background(), container.AttachOptions{Write: true})
		if err != nil {
			return err
		}
		conn.Close()
		if !at.Writing {
			return fmt.Errorf("berth console still writes after its stdin ended (%s)", at.Writer)
		}
		return nil
	})
	if err := c.Poweroff(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.code != 0 || !strings.Contains(res.stdout, "pi7pe") || !strings.Contains(res.stdout, "berth-busybox-shutdown") ||
			!strings.Contains(res.stderr, "Machine "+name+" ended: poweroff") {
			t.Errorf("berth console: exit %d\nstdout: %q\nstderr: %q", res.code, res.stdout, res.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("berth console did not return after the machine stopped")
	}
}
