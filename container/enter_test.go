package container_test

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
	"golang.org/x/sys/unix"
)

// TestEnterHandsNoFiles: a process entered into a machine has fds 0, 1 and 2
// of its own (pipes or a pty the supervisor made) and nothing else, even when
// the caller holds files without close-on-exec and gives its own files as
// stdin and stdout; it holds only the machine's bounding set, runs under its
// filter, and its exit code comes back.
func TestEnterHandsNoFiles(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	cfg := newConfig(t, "enterfd")
	cfg.Boot = true
	cfg.Root = container.Root{Dir: testenv.BusyboxGuest(t), ReadOnly: true}
	m := start(t, cfg)
	m.WaitPhase(t, container.PhaseRunning, 1)

	// A file this process holds without close-on-exec, as a shell's 3>file.
	leak, err := os.CreateTemp(t.TempDir(), "leak")
	if err != nil {
		t.Fatal(err)
	}
	defer leak.Close()
	if _, err := unix.FcntlInt(leak.Fd(), unix.F_SETFD, 0); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	script := `for f in /proc/self/fd/*; do echo "fd ${f##*/} $(readlink $f)"; done
		grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status; exit 42`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := container.Enter(ctx, cfg.RuntimeDir, container.EnterOptions{
		Command: []string{"/bin/sh", "-c", script}, Stdin: in, Stdout: out, Stderr: out})
	if err != nil {
		t.Fatal(err)
	}
	if code != 42 {
		t.Errorf("exit code %d, want 42", code)
	}
	b, _ := os.ReadFile(out.Name())
	got := string(b)
	t.Logf("inside:\n%s", got)
	fds := map[string]string{}
	status := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 2 && f[0] == "fd":
			fds[f[1]] = strings.Join(f[2:], " ")
		case len(f) == 2:
			status[strings.TrimSuffix(f[0], ":")] = f[1]
		}
	}
	for fd, target := range fds {
		n, _ := strconv.Atoi(fd)
		switch {
		case n <= 2 && !strings.HasPrefix(target, "pipe:"):
			t.Errorf("fd %s is %q, want a pipe of the supervisor's", fd, target)
		case n > 2 && target != "" && !strings.HasPrefix(target, "/proc/"):
			// The shell's own directory fd of the glob (gone in the
			// subshell that reads it) is the only other one allowed.
			t.Errorf("fd %s (%s) reached the entered process", fd, target)
		}
	}
	if status["CapEff"] != status["CapBnd"] || status["Seccomp"] != "2" {
		t.Errorf("entered process: CapEff %s CapBnd %s Seccomp %s, want CapEff = CapBnd and a filter", status["CapEff"], status["CapBnd"], status["Seccomp"])
	}

	// With a pty: the supervisor's new pty in the machine's devpts, not the
	// caller's terminal.
	var tty bytes.Buffer
	code, err = container.Enter(ctx, cfg.RuntimeDir, container.EnterOptions{
		Command: []string{"/bin/sh", "-c", "tty; ls /proc/self/fd | wc -l"}, TTY: true, Stdout: &tty})
	if err != nil || code != 0 {
		t.Fatalf("tty enter: %d, %v", code, err)
	}
	if !strings.Contains(tty.String(), "/dev/pts/") {
		t.Errorf("tty enter: %q", tty.String())
	}
}

// BenchmarkEnter measures one enter of /bin/true into a running busybox
// machine, from the request to the exit code: with the supervisor in this
// process (as the tests run it), and detached (as berthd runs it: a small
// process of its own).
func BenchmarkEnter(b *testing.B) {
	testenv.SkipUnlessRoot(b)
	run := func(b *testing.B, runDir string) {
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			code, err := container.Enter(ctx, runDir, container.EnterOptions{Command: []string{"/bin/true"}})
			if err != nil || code != 0 {
				b.Fatalf("enter: %d, %v", code, err)
			}
		}
	}
	b.Run("in-process", func(b *testing.B) {
		cfg := newConfig(b, "enterbench")
		cfg.Boot = true
		cfg.Root = container.Root{Dir: testenv.BusyboxGuest(b), ReadOnly: true}
		m := machinetest.Start(b, cfg, container.Hooks{})
		m.WaitPhase(b, container.PhaseRunning, 1)
		run(b, cfg.RuntimeDir)
	})
	b.Run("detached", func(b *testing.B) {
		cfg := newConfig(b, "enterbench")
		cfg.Boot = true
		cfg.Root = container.Root{Dir: testenv.BusyboxGuest(b), ReadOnly: true}
		ctx := context.Background()
		pid, err := container.SpawnDetached(ctx, cfg, "test-supervise")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if c, err := container.Dial(cfg.RuntimeDir); err == nil {
				_ = c.Kill(ctx, unix.SIGKILL, "all")
			}
			if container.WaitSupervisorGone(ctx, cfg.RuntimeDir, 15*time.Second) != nil {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		})
		machinetest.WaitPhase(b, cfg.RuntimeDir, container.PhaseRunning, 1)
		run(b, cfg.RuntimeDir)
	})
}
