package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/machined/api"
)

// TestShow: berth show NAME PATH prints the machine's effective definition,
// its two profiles merged in order, each field with its origin (a file and
// line, a profile's, or default); -o json gives the same as {definition,
// origins}; a machine the files do not declare is an error naming those they do.
func TestShow(t *testing.T) {
	code, out, errs := run(t, "show", "web", "testdata/show")
	if code != 0 {
		t.Fatalf("berth show = %d:\n%s%s", code, out, errs)
	}
	testenv.Golden(t, "testdata/show.golden", out)

	code, out, errs = run(t, "show", "-o", "json", "web", "testdata/show")
	var def api.Definition
	if err := json.Unmarshal([]byte(out), &def); code != 0 || err != nil {
		t.Fatalf("berth show -o json = %d, %v:\n%s%s", code, err, out, errs)
	}
	var m struct {
		Resources struct {
			MemoryMax int64   `json:"memoryMax"`
			CPUs      float64 `json:"cpus"`
		} `json:"resources"`
	}
	if err := json.Unmarshal(def.Definition, &m); err != nil || m.Resources.MemoryMax != 1<<30 || m.Resources.CPUs != 0.5 {
		t.Errorf("definition %s (%v): want memoryMax 1G from web, cpus 0.5 from tight", def.Definition, err)
	}
	if o := def.Origins["resources.cpus"]; o.Profile != "tight" || o.File != filepath.Join("testdata/show", "profiles.yaml") || o.Line != 12 {
		t.Errorf("origin of resources.cpus: %+v, want profile tight at profiles.yaml:12", o)
	}

	code, _, errs = run(t, "show", "db", "testdata/show")
	if code != 1 || !strings.Contains(errs, `machine "db"`) || !strings.Contains(errs, "declare web") {
		t.Errorf("berth show db = %d, stderr %q: want 1 naming the declared machines", code, errs)
	}
}

// TestShowThroughBerthd: without PATH, berth show asks berthd for the
// definition in force: the one applied.
func TestShowThroughBerthd(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	p := startBerthd(t)
	defs := filepath.Join(t.TempDir(), "defs")
	if err := os.MkdirAll(defs, 0o755); err != nil {
		t.Fatal(err)
	}
	name := testenv.UniqueName("show")
	write := func(file, body string) {
		if err := os.WriteFile(filepath.Join(defs, file), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("p.yaml", "apiVersion: berth/v1\nkind: Profile\nname: small\nresources: {memoryMax: 64M}\n")
	write("m.yaml", "apiVersion: berth/v1\nkind: Image\nname: "+name+"\ndirectory: "+testenv.BusyboxGuest(t)+
		"\n---\napiVersion: berth/v1\nkind: Machine\nname: "+name+"\nimage: "+name+"\nstate: stopped\nprofiles: [small]\n")
	runDir := p.RuntimeDir
	if code, out, errs := run(t, "--runtime-dir", runDir, "apply", defs); code != 0 {
		t.Fatalf("apply = %d:\n%s%s", code, out, errs)
	}
	t.Cleanup(func() { run(t, "--runtime-dir", runDir, "apply", "--forget", "--prune", defs) })
	code, out, errs := run(t, "--runtime-dir", runDir, "show", name)
	if code != 0 || !strings.Contains(out, "memoryMax: 64M # from profile small (") || !strings.Contains(out, "name: "+name+" # ") {
		t.Errorf("berth show through berthd = %d:\n%s%s", code, out, errs)
	}
	t.Logf("berth show %s:\n%s", name, out)
	if code, _, errs := run(t, "--runtime-dir", runDir, "show", "nosuch"); code != 1 || !strings.Contains(errs, `"nosuch"`) {
		t.Errorf("berth show nosuch = %d, %q", code, errs)
	}
}
