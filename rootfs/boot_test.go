package rootfs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
	"github.com/berthd/berth/rootfs"
)

// The test binary re-executed is three things: the machine's payload stage
// (container.Reexec), an import to kill midway (kill_test.go), and a
// daemonless one-shot run of a machine from the store (bootChild).
const (
	importChildEnv = "BERTH_ROOTFS_TEST_IMPORT" // STATEDIR|NAME|LOCATION
	bootChildEnv   = "BERTH_ROOTFS_TEST_BOOT"   // STATEDIR|MACHINE|RUNDIR
)

func TestMain(m *testing.M) {
	container.Reexec()
	if v := os.Getenv(importChildEnv); v != "" {
		parts := strings.SplitN(v, "|", 3)
		s, err := rootfs.Open(parts[0])
		if err == nil {
			_, err = s.Import(context.Background(), parts[1], rootfs.Tar{Location: parts[2]}, rootfs.ImportOptions{})
		}
		exit(err)
	}
	if v := os.Getenv(bootChildEnv); v != "" {
		exit(bootChild(strings.SplitN(v, "|", 3)))
	}
	os.Exit(m.Run())
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// bootChild is a fresh process with no daemon: it opens the store, takes the
// machine's root lock as a supervisor does, and runs `cat /root/marker` in the
// machine with the console passed through.
func bootChild(args []string) error {
	s, err := rootfs.Open(args[0])
	if err != nil {
		return err
	}
	lock, err := s.LockRoot(args[1])
	if err != nil {
		return err
	}
	defer lock.Unlock()
	r, err := s.Root(args[1])
	if err != nil {
		return err
	}
	cfg := machineConfig(r, args[2])
	cfg.Args = []string{"/bin/cat", "/root/marker"}
	cfg.Console = "passthrough"
	st, err := container.Supervise(context.Background(), cfg, container.Hooks{})
	if err != nil {
		return err
	}
	if st.Code != 0 {
		return fmt.Errorf("machine exited %d (%s)", st.Code, st.Reason)
	}
	return nil
}

// machineConfig is the supervisor's config for a root from the store: the
// overlay is mounted by the payload inside its own mount namespace.
func machineConfig(r *rootfs.Root, runDir string) container.Config {
	cfg := container.Config{
		Name:        r.Machine,
		UUID:        "0123456789abcdef0123456789abcdef",
		RuntimeDir:  runDir,
		ConsoleLog:  filepath.Join(runDir, "console.log"),
		StopTimeout: 20 * time.Second,
	}
	if r.Overlay != nil {
		cfg.Root.Overlay = &container.Overlay{Lower: r.Overlay.Lower, Upper: r.Overlay.Upper, Work: r.Overlay.Work}
	} else {
		cfg.Root.Dir = r.Dir
	}
	return cfg
}

// TestBootFromStore imports a real Debian 12 tarball, makes a machine root from
// it by the default strategy (overlay on this ext4), boots systemd in it, writes
// a file inside, powers off, boots again and finds the file, and finally reads
// it from a daemonless one-shot run in a fresh process. While the machine runs,
// its root cannot be removed or cloned.
func TestBootFromStore(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	archive := debianTarball(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	state := filepath.Join(t.TempDir(), "state")
	s, err := rootfs.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, "debian", rootfs.Tar{Location: archive}, rootfs.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	name := testenv.UniqueName("rootfs")
	r, err := s.CreateRoot(ctx, name, "debian", rootfs.StrategyAuto)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("root of %s: %s", name, r.Strategy)
	runDir, err := os.MkdirTemp("/run", "berth-rootfs-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })

	for boot := 1; boot <= 2; boot++ {
		lock, err := s.LockRoot(name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := machineConfig(r, runDir)
		cfg.Boot = true
		m := machinetest.Start(t, cfg, container.Hooks{})
		m.WaitPhase(t, container.PhaseRunning, 1)
		if boot == 1 {
			if _, err := s.RemoveRoot(name, true); !errors.Is(err, rootfs.ErrBusy) {
				t.Errorf("RemoveRoot of a running machine = %v, want ErrBusy", err)
			}
			if _, err := s.CloneRoot(ctx, name, name+"-c"); !errors.Is(err, rootfs.ErrBusy) {
				t.Errorf("CloneRoot of a running machine = %v, want ErrBusy", err)
			}
			if out, code := enter(t, runDir, "echo persisted > /root/marker && sync"); code != 0 {
				t.Fatalf("write inside: %d %s", code, out)
			}
		} else if out, code := enter(t, runDir, "cat /root/marker"); code != 0 || out != "persisted\n" {
			t.Errorf("after stop/start /root/marker reads %q (exit %d)", out, code)
		}
		c, err := container.Dial(runDir)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Poweroff(ctx); err != nil {
			t.Fatal(err)
		}
		if ex, _ := m.Wait(t); ex.Reason != container.ReasonPoweroff {
			t.Errorf("boot %d ended %+v, want a poweroff", boot, ex)
		}
		lock.Unlock()
	}
	if _, err := os.Stat(filepath.Join(r.Overlay.Upper, "root/marker")); r.Overlay != nil && err != nil {
		t.Errorf("the file is not in the machine's upper directory: %v", err)
	}

	// A fresh process, no daemon (its own runtime dir: this process, which
	// supervised the boots above, is alive and named in the old state.json).
	runDir2, err := os.MkdirTemp("/run", "berth-rootfs-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir2) })
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), bootChildEnv+"="+state+"|"+name+"|"+runDir2)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "persisted") {
		t.Errorf("daemonless re-run: %v, stdout %q, stderr %s", err, out.String(), errb.String())
	}

	if freed, err := s.RemoveRoot(name, true); err != nil || freed <= 0 {
		t.Errorf("RemoveRoot after the machine stopped = %d, %v", freed, err)
	}
}

func enter(t *testing.T, runDir string, script string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code, err := container.Enter(ctx, runDir, container.EnterOptions{Command: []string{"/bin/sh", "-c", script}, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("enter: %v", err)
	}
	return out.String(), code
}

// debianTarball is the cached Debian 12 archive of the internal tests
// (debianTar in helpers_test.go), built on first use.
func debianTarball(t *testing.T) string {
	t.Helper()
	_, archive := rootfs.DebianTarForTest(t)
	return archive
}
