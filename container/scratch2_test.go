package container_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
)

func TestScratchDebian(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	lower := testenv.DebianGuest(t)
	name := testenv.UniqueName("t")
	tmp := t.TempDir()
	os.MkdirAll(tmp+"/upper", 0o755)
	os.MkdirAll(tmp+"/work", 0o755)
	cfg := container.Config{Name: name, UUID: "0123456789abcdef0123456789abcdef", Boot: true,
		Root:       container.Root{Overlay: &container.Overlay{Lower: []string{lower}, Upper: tmp + "/upper", Work: tmp + "/work"}},
		RuntimeDir: filepath.Join(tmp, "run"), ConsoleLog: filepath.Join(tmp, "console.log"), StopTimeout: 10 * time.Second}
	done := make(chan container.ExitStatus)
	t0 := time.Now()
	go func() {
		st, err := container.Supervise(context.Background(), cfg, container.Hooks{})
		t.Logf("status %v err %v", st, err)
		done <- st
	}()
	var st container.State
	for i := 0; i < 300; i++ {
		time.Sleep(20 * time.Millisecond)
		st, _ = container.ReadState(cfg.RuntimeDir)
		if st.Phase == container.PhaseRunning || st.Phase == container.PhaseExited {
			break
		}
	}
	t.Logf("phase %s after %v", st.Phase, time.Since(t0))
	var out bytes.Buffer
	code, err := container.Enter(context.Background(), st.LeaderPID, container.EnterOptions{Command: []string{"/bin/sh", "-c", "systemctl is-system-running; systemd-analyze; systemd-analyze blame | head; systemd-analyze critical-chain; journalctl -b --no-pager | head -60; ls -la /dev/console; exit 7"}, Stdout: &out, Stderr: &out})
	t.Logf("enter: code %d err %v\n%s", code, err, out.String())
	c, err := container.Dial(cfg.RuntimeDir)
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	if err := c.Poweroff(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-done
	t.Logf("stopped in %v", time.Since(t1))
	b, _ := os.ReadFile(cfg.ConsoleLog)
	t.Logf("console:\n%s", b)
}
