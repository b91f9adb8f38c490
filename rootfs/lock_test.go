package rootfs

import (
	"os"
	"os/exec"
	"testing"
)

// TestUnlockWithACopyElsewhere: a root lock released while another process
// still holds a copy of its descriptor (a child forked meanwhile, before its
// exec) is free at once, so the machine's supervisor can take it.
func TestUnlockWithACopyElsewhere(t *testing.T) {
	ctx := ctxT(t)
	s := openStore(t)
	if _, err := s.Import(ctx, "tiny", Dir{Path: smallTree(t)}, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateRoot(ctx, "m", "tiny", StrategyCopy); err != nil {
		t.Fatal(err)
	}
	lock, err := s.LockRoot("m")
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
	again, err := s.LockRoot("m")
	if err != nil {
		t.Fatalf("LockRoot after Unlock, a copy of the descriptor still open in pid %d: %v", child.Process.Pid, err)
	}
	again.Unlock()
}
