package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/spec"
)

func TestValidateExamples(t *testing.T) {
	code, out, errs := run(t, "validate", "-o", "table", "../../examples")
	if code != 0 || out != "7 machines, 1 network, 1 image, 1 profile: ok\n" || errs != "" {
		t.Errorf("berth validate examples/ = %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestValidateBroken runs berth validate on the eleven broken files of spec's
// tests: exit status 1 and every error, located, on stderr, exactly the errors
// the files assert (# assert-error: comments beside the lines they are about).
func TestValidateBroken(t *testing.T) {
	// Run from spec/ so the file names match the assertions'.
	wd, _ := os.Getwd()
	if err := os.Chdir("../../spec"); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	want := testenv.AssertedErrors(t, "testdata/broken")
	code, out, errs := run(t, "validate", "-o", "table", "testdata/broken", "testdata/valid-context.yaml")
	if d := testenv.Diff(strings.Join(want, "\n")+"\n"+plural(len(want), "error")+"\n", errs); code != 1 || out != "" || d != "" {
		t.Errorf("berth validate broken = %d\nstdout %q\nstderr:\n%s%s", code, out, errs, d)
	}

	code, out, _ = run(t, "validate", "-o", "json", "testdata/broken", "testdata/valid-context.yaml")
	var r validationResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if code != 1 || r.Valid || len(r.Errors) != len(want) || r.Errors[0].File == "" || r.Errors[0].Line == 0 {
		t.Errorf("-o json: %d %+v", code, r)
	}
}

func TestSchemaCommand(t *testing.T) {
	code, out, _ := run(t, "schema")
	if code != 0 || out != string(spec.Schema()) {
		t.Errorf("berth schema = %d, %d bytes", code, len(out))
	}
	committed, err := os.ReadFile("../../berth.schema.json")
	if err != nil || string(committed) != out {
		t.Errorf("berth.schema.json differs from berth schema (go test ./spec -update): %v", err)
	}
}
