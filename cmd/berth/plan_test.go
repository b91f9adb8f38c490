package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
)

// TestPlanExitCodes: berth plan exits 0 when the host matches the definitions,
// 2 when applying would change something, 1 on definition errors — what a CI
// pipeline keys on. It runs without a daemon, on a state directory of its own.
func TestPlanExitCodes(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	dir := t.TempDir()
	state, runDir := filepath.Join(dir, "state"), filepath.Join(dir, "run")
	empty := filepath.Join(dir, "empty")
	defs := filepath.Join(dir, "defs")
	broken := filepath.Join(dir, "broken")
	for _, d := range []string{empty, defs, broken} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(defs, "m.yaml"), "apiVersion: berth/v1\nkind: Image\nname: i\ndirectory: /nonexistent\n---\n"+
		"apiVersion: berth/v1\nkind: Machine\nname: "+testenv.UniqueName("plan")+"\nimage: i\n")
	write(filepath.Join(broken, "m.yaml"), "apiVersion: berth/v1\nkind: Machine\nname: x\nimage: nowhere\n")
	flags := []string{"--state-dir", state, "--runtime-dir", runDir}
	for _, tc := range []struct {
		path string
		code int
		out  string
	}{
		{empty, 0, "No changes"},
		{defs, 2, "+ image i: build"},
		{broken, 1, "m.yaml:4:8: image"},
	} {
		code, out, errs := run(t, append([]string{"plan", tc.path}, flags...)...)
		if code != tc.code || !strings.Contains(out+errs, tc.out) {
			t.Errorf("berth plan %s = %d, want %d with %q:\n%s%s", filepath.Base(tc.path), code, tc.code, tc.out, out, errs)
		}
	}
}
