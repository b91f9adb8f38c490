package hold

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/errdefs"
)

// stateWithRoot is a state directory holding machine m's directory.
func stateWithRoot(t *testing.T) string {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "machines", "m"), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func noneMissing() error { return nil }

// TestUnlockWithACopyElsewhere: a root lock released while another process
// still holds a copy of its descriptor (a child forked meanwhile, before its
// exec) is free at once, so the machine's supervisor can take it.
func TestUnlockWithACopyElsewhere(t *testing.T) {
	dir := stateWithRoot(t)
	lock, err := LockRoot(dir, "m", "", noneMissing)
	if err != nil {
		t.Fatal(err)
	}
	// The child gets the very file description (as a fork does), and keeps it.
	child := exec.Command("sleep", "30")
	child.ExtraFiles = []*os.File{lock.f}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	if err := lock.Unlock(); err != nil {
		t.Fatal(err)
	}
	again, err := LockRoot(dir, "m", "", noneMissing)
	if err != nil {
		t.Fatalf("LockRoot after Unlock, a copy of the descriptor still open in pid %d: %v", child.Process.Pid, err)
	}
	again.Unlock()
}

// TestLockRootBusyNamesTheHolder: a second lock is refused as busy, naming
// the holding process and the refused action; a missing lock file asks
// missing, whose error is returned as it is.
func TestLockRootBusyNamesTheHolder(t *testing.T) {
	dir := stateWithRoot(t)
	lock, err := LockRoot(dir, "m", "", noneMissing)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	_, err = LockRoot(dir, "m", "remove it", noneMissing)
	if !errors.Is(err, errdefs.ErrBusy) || !strings.Contains(err.Error(), "process ") || !strings.HasSuffix(err.Error(), "stop it before you remove it") {
		t.Errorf("second LockRoot = %v, want busy naming the holder and the action", err)
	}
	gone := errors.New("machine \"x\" has no root")
	if _, err := LockRoot(dir, "x", "", func() error { return gone }); err != gone {
		t.Errorf("LockRoot of a machine without a lock file = %v, want missing's error", err)
	}
}

// TestUseImage: an image in use is seen in use until the file closes.
func TestUseImage(t *testing.T) {
	dir := t.TempDir()
	digest := "sha256:" + strings.Repeat("ab", 32)
	if err := os.MkdirAll(filepath.Dir(InUsePath(dir, digest)), 0o700); err != nil {
		t.Fatal(err)
	}
	if ImageInUse(dir, digest) {
		t.Fatal("in use before UseImage")
	}
	f, err := UseImage(dir, digest)
	if err != nil {
		t.Fatal(err)
	}
	if !ImageInUse(dir, digest) {
		t.Error("not in use while held")
	}
	f.Close()
	if ImageInUse(dir, digest) {
		t.Error("in use after close")
	}
}
