package container_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
)

func TestScratchApp(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root := testenv.BusyboxGuest(t)
	name := testenv.UniqueName("t")
	tmp := t.TempDir()
	cfg := container.Config{Name: name, UUID: "0123456789abcdef0123456789abcdef", Root: container.Root{Dir: root, ReadOnly: true},
		Args: []string{"/bin/sh", "-c", "echo hello; hostname; cat /proc/1/cmdline; echo; ls /dev; cat /proc/self/cgroup; mount; exit 3"},
		RuntimeDir: filepath.Join(tmp, "run"), ConsoleLog: filepath.Join(tmp, "console.log"), StopTimeout: 5 * time.Second}
	st, err := container.Supervise(context.Background(), cfg, container.Hooks{})
	t.Logf("status %v err %v", st, err)
	b, _ := osReadFile(cfg.ConsoleLog)
	t.Logf("console:\n%s", b)
}

func osReadFile(p string) ([]byte, error) { return os.ReadFile(p) }
