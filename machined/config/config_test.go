package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestParse: the file berth install writes parses to what it says, an empty
// file gets the defaults, and every mistake a person can make is named by
// file and field.
func TestParse(t *testing.T) {
	c, err := Parse("berthd.yaml", []byte(DefaultYAML))
	if err != nil {
		t.Fatalf("the default configuration: %v", err)
	}
	if len(c.Sources) != 1 || c.Sources[0].Path != "/etc/berth/machines" || c.Parallelism != DefaultParallelism || time.Duration(c.Resync) != time.Minute {
		t.Errorf("the default configuration decoded as %+v", c)
	}
	t.Setenv("BERTH_RUNTIME_DIR", "/run/test-berth")
	c, err = Parse("empty.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Socket != "/run/test-berth/berthd.sock" || c.StateDir != "/var/lib/berth" {
		t.Errorf("defaults: %+v", c.Paths())
	}
	c, err = Parse("git.yaml", []byte("sources:\n  - git: {url: /srv/m.git}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if g := c.Sources[0].Git; g.Branch != "main" || time.Duration(g.Interval) != time.Minute {
		t.Errorf("git defaults: %+v", g)
	}
	for in, want := range map[string]string{
		"bogus: 1\n":                                "bad.yaml: line 1: unknown field bogus",
		"parallelism: many\n":                       "bad.yaml: line 1: cannot unmarshal `many` into int",
		"resync: soon\n":                            `"soon" is not a duration like 30s or 5m`,
		"sources:\n  - path: rel\n":                 `sources[0].path: "rel" must be an absolute path`,
		"sources:\n  - {}\n":                        "sources[0]: needs path or git",
		"sources:\n  - {path: /a, git: {url: u}}\n": "sources[0]: give either path or git, not both",
		"sources:\n  - git: {branch: b}\n":          "sources[0].git.url: missing",
		"sources:\n  - git: {url: u, path: ../x}\n": `sources[0].git.path: "../x" must be a relative path inside the repository`,
		"stateDir: var/lib\n":                       `bad.yaml: stateDir: "var/lib" must be an absolute path`,
	} {
		_, err := Parse("bad.yaml", []byte(in))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "bad.yaml: ") {
			t.Errorf("Parse(%q) = %v, want an error with %q", in, err, want)
		}
	}
}

// TestLoad: no file at the default path means the defaults; no file
// anywhere else is an error.
func TestLoad(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing file at a given path was accepted")
	}
	if _, err := os.Stat(DefaultPath); os.IsNotExist(err) {
		if _, err := Load(DefaultPath); err != nil {
			t.Errorf("no file at the default path: %v", err)
		}
	}
}
