package spec

import (
	"fmt"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
)

// TestCopiesBroken loads templates and ephemeral roots that are wrong in
// every way the checks know, each error asserted in the file.
func TestCopiesBroken(t *testing.T) {
	_, err := Load("testdata/copies", "testdata/valid-context.yaml")
	if err == nil {
		t.Fatal("broken definitions loaded without error")
	}
	want := strings.Join(testenv.AssertedErrors(t, "testdata/copies"), "\n")
	if d := testenv.Diff(want, err.Error()); d != "" {
		t.Errorf("the errors differ from what testdata/copies asserts:\n%s", d)
	}
}

// TestCopies expands a template: NAME-1 … NAME-N, each with its own name and
// hostname and the template's other fields; no machine NAME; a change of the
// count changes no copy's hash, a change of the template changes every one.
func TestCopies(t *testing.T) {
	load := func(copies int, memory string) *Set {
		t.Helper()
		doc := fmt.Sprintf(`apiVersion: berth/v1
kind: Image
name: bb
directory: /srv/bb
---
apiVersion: berth/v1
kind: Network
name: lan
subnet: 10.87.0.0/24
---
apiVersion: berth/v1
kind: Machine
name: lab
image: bb
copies: %d
network: lan
resources: {memoryMax: %s}
root: {ephemeral: true}
`, copies, memory)
		set, err := Parse("lab.yaml", []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	three := load(3, "256M")
	var names []string
	for _, m := range three.Machines {
		names = append(names, m.Name+"/"+m.Hostname)
		if m.Template != "lab" || m.Copies != 0 || m.Network.Name != "lan" || m.Root.EphemeralSize != DefaultEphemeralSize {
			t.Errorf("copy %s: %+v", m.Name, m)
		}
		if m.Source.File != "lab.yaml" || m.Source.Line != 11 {
			t.Errorf("copy %s: source %+v, want the template's", m.Name, m.Source)
		}
	}
	if got := strings.Join(names, " "); got != "lab-1/lab-1 lab-2/lab-2 lab-3/lab-3" {
		t.Errorf("copies: %s", got)
	}
	if three.Machine("lab") != nil {
		t.Error("a template is a machine of its own")
	}
	two, bigger := load(2, "256M"), load(3, "512M")
	for i, m := range two.Machines {
		if m.Hash() != three.Machines[i].Hash() {
			t.Errorf("%s: fewer copies changed its hash", m.Name)
		}
	}
	for i, m := range bigger.Machines {
		if m.Hash() == three.Machines[i].Hash() {
			t.Errorf("%s: a change of the template left its hash", m.Name)
		}
	}
}
