package testhost

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BuildBerth builds berth, berthd and berth-stage from this module into a
// directory of the test (install takes the others from berth's directory)
// and returns it. Go's build
// cache makes repeated calls cheap.
func BuildBerth(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		t.Fatalf("test host: find the berth module (go env GOMOD): %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/berth", "./cmd/berthd", "./cmd/berth-stage")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("test host: go build berth: %v\n%s", err, out)
	}
	return dir
}

// Install installs berth into the host with berth's own install step,
// `berth install --root DIR`, run from bindir (see BuildBerth). Call it before Boot,
// or Exec `systemctl daemon-reload` afterwards.
func (h *Host) Install(ctx context.Context, bindir string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(bindir, "berth"), "install", "--root", h.Dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("test host %s: berth install --root: %w\n%s", h.Name, err, out)
	}
	return nil
}
