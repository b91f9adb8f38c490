package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/rootfs"
)

// TestSnapshotVerbs: berth snapshot takes, lists, restores, exports and
// removes snapshots of a stopped machine's root; restore and remove need
// --yes; a running machine (its root lock held) is refused with "stop it";
// berth clone --snapshot copies a snapshot; a mistyped verb is told as one.
func TestSnapshotVerbs(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	state := t.TempDir()
	st := "--state-dir=" + state
	if code, out, errs := run(t, st, "image", "import", "tiny", tinyTree(t)); code != 0 {
		t.Fatalf("import: %d %q %q", code, out, errs)
	}
	s, err := rootfs.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.CreateRoot(t.Context(), "m1", "tiny", rootfs.StrategyAuto)
	if err != nil {
		t.Fatal(err)
	}
	// A file in the machine's own tree (the upper directory of an overlay
	// root), as the machine would have written it.
	own := r.Dir
	if r.Overlay != nil {
		own = r.Overlay.Upper
	}
	hostname := filepath.Join(own, "etc/hostname")
	if err := os.MkdirAll(filepath.Dir(hostname), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hostname, []byte("before\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if code, out, errs := run(t, st, "-o", "table", "snapshot", "m1", "s1"); code != 0 || !strings.Contains(out, "snapshot s1 of machine m1 taken") {
		t.Fatalf("snapshot: %d %q %q", code, out, errs)
	}
	if code, out, errs := run(t, st, "-o", "table", "snapshot", "create", "m1"); code != 0 || !strings.Contains(out, "of machine m1 taken") {
		t.Errorf("snapshot create with the default name: %d %q %q", code, out, errs)
	}
	var list []rootfs.Snapshot
	code, out, _ := run(t, st, "-o", "json", "snapshot", "list", "m1")
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 2 || list[0].Name != "s1" || list[0].Digest == "" {
		t.Fatalf("snapshot list -o json: %d %q", code, out)
	}
	if code, out, _ := run(t, st, "-o", "table", "snapshot", "list"); code != 0 || !strings.HasPrefix(out, "MACHINE") || !strings.Contains(out, "s1") {
		t.Errorf("snapshot list: %d %q", code, out)
	}
	if code, _, errs := run(t, st, "snapshot", "lst"); code != 1 || !strings.HasPrefix(errs, `berth: unknown command "lst" for "berth snapshot", and machine "lst" has no root`) || !strings.Contains(errs, "\tlist") {
		t.Errorf("snapshot lst: %d %q", code, errs)
	}
	if code, _, errs := run(t, st, "snapshot", "m1", "s1"); code != 1 || !strings.Contains(errs, `already has a snapshot "s1"`) {
		t.Errorf("snapshot s1 again: %d %q", code, errs)
	}

	// Running: refused.
	lock, err := s.LockRoot("m1")
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errs := run(t, st, "snapshot", "m1", "s2"); code != 1 || !strings.Contains(errs, "stop it before you snapshot it") {
		t.Errorf("snapshot of a running machine: %d %q", code, errs)
	}
	if code, _, errs := run(t, st, "snapshot", "restore", "m1", "s1", "--yes"); code != 1 || !strings.Contains(errs, "stop it before you restore a snapshot") {
		t.Errorf("restore onto a running machine: %d %q", code, errs)
	}
	if code, out, errs := run(t, st, "-o", "table", "clone", "--snapshot", "s1", "m1", "m2"); code != 0 || !strings.Contains(out, "cloned m1 (snapshot s1) to m2") {
		t.Errorf("clone --snapshot of a running machine: %d %q %q", code, out, errs)
	}
	lock.Unlock()

	if err := os.WriteFile(hostname, []byte("after\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := run(t, st, "snapshot", "restore", "m1", "s1"); code != 1 || !strings.Contains(errs, "current data is lost: add --yes") {
		t.Errorf("restore without --yes: %d %q", code, errs)
	}
	if b, _ := os.ReadFile(hostname); string(b) != "after\n" {
		t.Errorf("restore without --yes changed the root: %q", b)
	}
	if code, out, errs := run(t, st, "-o", "table", "snapshot", "restore", "m1", "s1", "--yes"); code != 0 || !strings.Contains(out, "restored from snapshot s1") {
		t.Errorf("restore: %d %q %q", code, out, errs)
	}
	if b, _ := os.ReadFile(hostname); string(b) != "before\n" {
		t.Errorf("restored hostname %q", b)
	}

	// Export, and import the export as an image: the machine's tree.
	exp := filepath.Join(t.TempDir(), "m1.tar.zst")
	if code, out, errs := run(t, st, "-o", "table", "snapshot", "export", "m1", "s1", exp); code != 0 || !strings.Contains(out, "exported snapshot s1 of machine m1") {
		t.Fatalf("export: %d %q %q", code, out, errs)
	}
	if code, out, errs := run(t, st, "-o", "table", "image", "import", "from-snap", exp); code != 0 {
		t.Fatalf("import of the export: %d %q %q", code, out, errs)
	}
	img, err := s.Image("from-snap")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(img.Path, "etc/hostname")); string(b) != "before\n" {
		t.Errorf("exported hostname %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(img.Path, "etc/os-release")); string(b) != "ID=tiny\n" {
		t.Errorf("exported os-release %q", b)
	}

	if code, _, errs := run(t, st, "snapshot", "remove", "m1", "s1"); code != 1 || !strings.Contains(errs, "add --yes") {
		t.Errorf("remove without --yes: %d %q", code, errs)
	}
	var gone []snapshotted
	code, out, _ = run(t, st, "-o", "json", "snapshot", "remove", "m1", list[0].Name, list[1].Name, "--yes")
	if code != 0 || json.Unmarshal([]byte(out), &gone) != nil || len(gone) != 2 || gone[0].Freed <= 0 {
		t.Errorf("remove -o json: %d %q", code, out)
	}
	if left, err := s.Snapshots(""); err != nil || len(left) != 0 {
		t.Errorf("snapshots left: %+v %v", left, err)
	}
}
