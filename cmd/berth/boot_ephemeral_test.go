package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/userns"
)

// TestBootEphemeral runs `berth boot -D DIR --ephemeral` twice on a copy of
// the busybox guest: the machine writes, deletes and sees its own changes,
// the directory stays exactly as it was, the next boot sees none of them, a
// write past --ephemeral-size fails, and no UID range is kept.
func TestBootEphemeral(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	dir := testenv.CopyTree(t, testenv.BusyboxGuest(t))
	run1, _ := bootRuntimeDir(t)
	out := t.TempDir()
	before := testenv.TreeSum(t, dir)
	name := testenv.UniqueName("bootx")
	script := `echo mine > /etc/written && rm /bin/ls && cat /etc/written > /out/seen && ! test -e /bin/ls && ` +
		`(dd if=/dev/zero of=/big bs=1M count=40 2>/dev/null; echo $? > /out/dd)`
	code, _, stderr := run(t, "--runtime-dir", run1, "boot", "-D", dir, "--name", name, "-x", "--ephemeral-size", "16M",
		"--bind", out+":/out", "--", "/bin/sh", "-c", script)
	if code != 0 {
		t.Fatalf("ephemeral boot: exit %d (stderr %q)", code, stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "seen")); string(b) != "mine\n" {
		t.Errorf("the machine's own write, as it saw it: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "dd")); strings.TrimSpace(string(b)) == "0" {
		t.Errorf("writing 40M on a 16M ephemeral layer succeeded")
	}
	if after := testenv.TreeSum(t, dir); after != before {
		t.Errorf("berth boot --ephemeral changed the directory:\nbefore %s\nafter  %s", before, after)
	}
	code, _, stderr = run(t, "--runtime-dir", run1, "boot", "-D", dir, "--name", name, "--ephemeral",
		"--bind", out+":/out", "--", "/bin/sh", "-c", `test -e /etc/written && exit 3; test -e /bin/ls || exit 4; exit 0`)
	if code != 0 {
		t.Errorf("the second ephemeral boot: exit %d, want 0 (3: the first boot's file is there, 4: its deletion) (stderr %q)", code, stderr)
	}
	if all, err := userns.Open(os.Getenv("BERTH_STATE_DIR")).All(); err != nil || len(all) != 0 {
		t.Errorf("UID ranges kept after berth boot --ephemeral: %v, %v", all, err)
	}
	if code, _, stderr := run(t, "--runtime-dir", run1, "boot", "-D", dir, "-x", "--read-only", "--", "/bin/true"); code != 1 || !strings.Contains(stderr, "--ephemeral and --read-only") {
		t.Errorf("--ephemeral with --read-only: exit %d, %q", code, stderr)
	}
}
