package container

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// TestSameBuild: berth-stage is used only when it is of the very build of
// the binary that starts it, owned as it is and writable by no one else.
func TestSameBuild(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if !sameBuild(self) {
		t.Fatalf("sameBuild(%s) of this test binary itself = false", self)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	same := filepath.Join(dir, "same")
	if err := os.WriteFile(same, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if !sameBuild(same) {
		t.Error("a copy of this binary is not taken for the same build")
	}
	if err := os.Chmod(same, 0o775); err != nil {
		t.Fatal(err)
	}
	if sameBuild(same) {
		t.Error("a group-writable copy is taken for the same build")
	}
	// Not a Go binary; and a Go binary of another build (go's own).
	others := []string{"/bin/sh"}
	if goBin, err := exec.LookPath("go"); err == nil {
		others = append(others, goBin)
	}
	for _, other := range others {
		if sameBuild(other) {
			t.Errorf("sameBuild(%s) = true", other)
		}
	}
	if sameBuild(filepath.Join(dir, "missing")) {
		t.Error("a missing file is taken for the same build")
	}
}

// TestStageRuntimeEnv: a stage's GODEBUG keeps its caller's settings and
// adds its own after them; GOMAXPROCS is 1 unless the caller set it.
func TestStageRuntimeEnv(t *testing.T) {
	for _, c := range []struct {
		env   []string
		extra string
		want  []string
	}{
		{[]string{"A=1"}, "", []string{"A=1", "GODEBUG=" + stageGODEBUG, "GOMAXPROCS=1"}},
		{[]string{"GODEBUG=gctrace=1", "A=1"}, "x=0", []string{"GODEBUG=gctrace=1," + stageGODEBUG + ",x=0", "A=1", "GOMAXPROCS=1"}},
		{[]string{"GODEBUG=", "GOMAXPROCS=2"}, "", []string{"GODEBUG=" + stageGODEBUG, "GOMAXPROCS=2"}},
	} {
		got := stageRuntimeEnv(c.env, c.extra)
		if !slices.Equal(got, c.want) {
			t.Errorf("stageRuntimeEnv(%q, %q) = %q, want %q", c.env, c.extra, got, c.want)
		}
	}
}
