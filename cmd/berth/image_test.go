package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/rootfs"
)

// tinyTree makes a tree of two files to import: etc/os-release (ID=tiny)
// and bin/sh.
func tinyTree(t *testing.T) string {
	t.Helper()
	tree := filepath.Join(t.TempDir(), "tree")
	if out, err := exec.Command("sh", "-c", `mkdir -p "$1/etc" "$1/bin" && echo 'ID=tiny' > "$1/etc/os-release" && echo x > "$1/bin/sh"`, "sh", tree).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	return tree
}

// TestImageVerbs drives berth image import/list/export/remove/prune, clone and
// remove on a small tree, as a person would.
func TestImageVerbs(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	state := t.TempDir()
	tree := tinyTree(t)
	st := "--state-dir=" + state
	code, out, errs := run(t, st, "-o", "table", "image", "import", "tiny", tree)
	if code != 0 || !strings.Contains(out, "image tiny: sha256:") {
		t.Fatalf("import: %d %q %q", code, out, errs)
	}
	// Plain progress lines (stderr is not a terminal here).
	if !regexp.MustCompile(`(?m)^copy: started\ncopy: \d+ B in \d.*\ndigest: started\ndigest: [0-9.]+ [KM]?i?B in `).MatchString(errs) {
		t.Errorf("import progress: %q", errs)
	}
	code, out, _ = run(t, st, "-o", "json", "image", "list")
	var imgs []rootfs.Image
	if code != 0 || json.Unmarshal([]byte(out), &imgs) != nil || len(imgs) != 1 || imgs[0].Name != "tiny" {
		t.Fatalf("list -o json: %d %q", code, out)
	}
	code, out, _ = run(t, st, "-o", "table", "image", "list")
	if code != 0 || !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "tiny") {
		t.Errorf("list: %q", out)
	}
	exp := filepath.Join(t.TempDir(), "tiny.tar.gz")
	if code, out, errs = run(t, st, "-o", "table", "image", "export", "tiny", exp); code != 0 || !strings.Contains(out, "exported image tiny") {
		t.Errorf("export: %d %q %q", code, out, errs)
	}
	if code, _, errs = run(t, st, "image", "export", "tiny", exp+".zip"); code != 1 || !strings.Contains(errs, ".tar.zst") {
		t.Errorf("export to .zip: %d %q", code, errs)
	}
	if code, out, errs = run(t, st, "-o", "table", "image", "import", "again", exp); code != 0 || !strings.Contains(out, imgs[0].Digest) {
		t.Errorf("import of the export: %d %q %q", code, out, errs)
	}

	s, err := rootfs.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateRoot(t.Context(), "m1", "tiny", rootfs.StrategyAuto); err != nil {
		t.Fatal(err)
	}
	if code, _, errs = run(t, st, "image", "remove", "tiny"); code != 1 || !strings.Contains(errs, `used by machine "m1"`) {
		t.Errorf("remove used image: %d %q", code, errs)
	}
	lock, err := s.LockRoot("m1")
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errs = run(t, st, "clone", "m1", "m2"); code != 1 || !strings.Contains(errs, "is running") {
		t.Errorf("clone running: %d %q", code, errs)
	}
	if code, _, errs = run(t, st, "remove", "--delete-data", "m1"); code != 1 || !strings.Contains(errs, "stop it before you remove it") {
		t.Errorf("remove running: %d %q", code, errs)
	}
	lock.Unlock()
	if code, out, errs = run(t, st, "-o", "table", "clone", "m1", "m2"); code != 0 || !strings.Contains(out, "cloned m1 to m2") {
		t.Errorf("clone: %d %q %q", code, out, errs)
	}
	if code, out, _ = run(t, st, "remove", "--delete-data=false", "m2"); code != 0 || !strings.Contains(out, "is kept; add --delete-data") {
		t.Errorf("remove without --delete-data: %d %q", code, out)
	}
	var kept []removed
	if code, out, _ = run(t, st, "-o", "json", "remove", "m2"); code != 0 || json.Unmarshal([]byte(out), &kept) != nil ||
		len(kept) != 1 || kept[0].Machine != "m2" || kept[0].Deleted || kept[0].Size <= 0 {
		t.Errorf("remove -o json without --delete-data: %d %q", code, out)
	}
	if code, out, errs = run(t, st, "remove", "--delete-data", "m1", "m2"); code != 0 || strings.Count(out, "deleted its root (freed") != 2 {
		t.Errorf("remove --delete-data: %d %q %q", code, out, errs)
	}
	var gone []struct {
		Image string
		Freed int64
	}
	if code, out, _ = run(t, st, "-o", "json", "image", "remove", "tiny", "again"); code != 0 || json.Unmarshal([]byte(out), &gone) != nil ||
		len(gone) != 2 || gone[0].Image != "tiny" || gone[1].Image != "again" {
		t.Errorf("image remove -o json: %d %q", code, out)
	}
	if code, out, _ = run(t, st, "-o", "table", "image", "prune"); code != 0 || !strings.Contains(out, "freed") {
		t.Errorf("prune: %d %q", code, out)
	}
	ents, _ := os.ReadDir(filepath.Join(state, "images/sha256"))
	if len(ents) != 0 {
		t.Errorf("%d image contents left", len(ents))
	}
}

func TestImageBuildFromDefinition(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	state := t.TempDir()
	tree := filepath.Join(t.TempDir(), "tree")
	if err := os.MkdirAll(filepath.Join(tree, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	def := filepath.Join(t.TempDir(), "img.yaml")
	os.WriteFile(def, []byte("apiVersion: berth/v1\nkind: Image\nname: fromdir\ndirectory: "+tree+"\n"), 0o644)
	code, out, errs := run(t, "--state-dir="+state, "-o", "table", "image", "build", "-f", def)
	if code != 0 || !strings.Contains(out, "image fromdir: sha256:") {
		t.Fatalf("build: %d %q %q", code, out, errs)
	}
	s, _ := rootfs.Open(state)
	img, err := s.Image("fromdir")
	if err != nil || img.SpecHash == "" || img.Source != "dir:"+tree {
		t.Errorf("built image = %+v, %v", img, err)
	}
	if code, _, errs = run(t, "--state-dir="+state, "image", "build", "-f", def, "other"); code != 1 || !strings.Contains(errs, `no Image named "other"`) {
		t.Errorf("build unknown: %d %q", code, errs)
	}
}

// TestImageBuildNeedsFile: without -f, build is a usage error (exit 1, not 2,
// which means "changes pending").
func TestImageBuildNeedsFile(t *testing.T) {
	if code, _, errs := run(t, "--state-dir="+t.TempDir(), "image", "build"); code != 1 || !strings.Contains(errs, "give the definition with -f FILE") {
		t.Errorf("build without -f: exit %d, %q", code, errs)
	}
}
