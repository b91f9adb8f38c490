package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"github.com/spf13/pflag"
	"os"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/spec"
)

// run runs berth in this process with args and returns its exit code, stdout
// and stderr (with the error text, as execute prints it).
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	// One process runs every command of the package's tests: the global flags
	// start from their defaults each time, as in a fresh berth.
	rootCmd.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		_ = f.Value.Set(f.DefValue)
		f.Changed = false
	})
	rootCmd.SetOut(&out)
	rootCmd.SetErr(&errb)
	rootCmd.SetArgs(args)
	defer rootCmd.SetArgs(nil)
	err := rootCmd.Execute()
	code := 0
	if err != nil {
		code = 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		if ee == nil || ee.err != nil {
			errb.WriteString("berth: " + err.Error() + "\n")
		}
	}
	return code, out.String(), errb.String()
}

func TestValidateExamples(t *testing.T) {
	code, out, errs := run(t, "validate", "-o", "table", "../../examples")
	if code != 0 || out != "4 machines, 1 network, 1 image: ok\n" || errs != "" {
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
