package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStaysLean: berth-stage links the container runtime and the
// supervisor's wiring only. The packages below would bring back what it
// exists to leave out (berthd, the command line, the definition language,
// the image store and registry client, an HTTP stack).
func TestStaysLean(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool to list the binary's packages")
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/berthd/berth/machined", "github.com/berthd/berth/spec", "github.com/berthd/berth/rootfs",
		"github.com/spf13/cobra", "gopkg.in/yaml.v3", "github.com/google/go-containerregistry", "github.com/go-git",
		"net/http",
	}
	for _, p := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if (p == f || strings.HasPrefix(p, f+"/")) && p != "github.com/berthd/berth/rootfs/hold" {
				t.Errorf("berth-stage links %s", p)
			}
		}
	}
}
