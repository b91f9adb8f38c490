package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// run runs berth in this process with args, as main does, and returns its exit
// code, stdout and stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	resetFlags(rootCmd)
	code := execute(args, &out, &errb)
	return code, out.String(), errb.String()
}

// resetFlags sets every flag of cmd and of its verbs back to its default: one
// process runs every command of the package's tests, and each starts as in a
// fresh berth (cobra keeps the values of an earlier Execute, and appends to
// repeatable flags).
func resetFlags(cmd *cobra.Command) {
	reset := func(f *pflag.Flag) {
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			_ = sv.Replace(nil)
		} else {
			_ = f.Value.Set(f.DefValue)
		}
		f.Changed = false
	}
	cmd.PersistentFlags().VisitAll(reset)
	cmd.Flags().VisitAll(reset)
	for _, c := range cmd.Commands() {
		resetFlags(c)
	}
}

// TestExitCode: what a verb returns becomes berth's exit status, and the
// error's text, once, on stderr: what scripts and CI pipelines key on.
func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		code   int
		stderr string
	}{
		{"success", nil, 0, ""},
		{"plain error", errors.New("machine \"web\": not found"), 1, "berth: machine \"web\": not found\n"},
		{"wrapped plain error", fmt.Errorf("kill web: %w", errors.New("no such process")), 1, "berth: kill web: no such process\n"},
		{"plan: changes pending", &exitError{code: 2}, 2, ""},
		{"plan: definition errors", &exitError{code: 1}, 1, ""},
		{"exit code with a message", &exitError{code: 1, err: errors.New("2 of 3 actions failed")}, 1, "berth: 2 of 3 actions failed\n"},
		{"a machine's own exit code", &exitError{code: 7}, 7, ""},
		{"wrapped exitError: its code, its message", fmt.Errorf("outer: %w", &exitError{code: 3, err: errors.New("inner")}), 3, "berth: inner\n"},
	} {
		var stderr bytes.Buffer
		if code := exitCode(tc.err, &stderr); code != tc.code || stderr.String() != tc.stderr {
			t.Errorf("%s: exitCode(%v) = %d, stderr %q; want %d, %q", tc.name, tc.err, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}

// TestExecute runs berth as main does, on verbs that need neither root nor a
// manager: the exit status and where the messages go.
func TestExecute(t *testing.T) {
	for _, tc := range []struct {
		args         []string
		code         int
		stdout       string // a part of stdout
		stderrPrefix string
	}{
		{[]string{"schema"}, 0, `"$schema"`, ""},
		{[]string{"validate", "../../examples"}, 0, "4 machines, 1 network, 1 image: ok\n", ""},
		// The errors themselves are the message: no "berth:" line after them.
		{[]string{"validate", "../../spec/testdata/broken/01-typos.yaml"}, 1, "", "../../spec/testdata/broken/01-typos.yaml:"},
		{[]string{"bogus"}, 1, "", "berth: unknown command \"bogus\" for \"berth\""},
		{[]string{"recreate", "web"}, 1, "", "berth: recreate deletes the root of web and everything written in it; add --yes to go ahead\n"},
		{[]string{"image", "build"}, 1, "", "berth: image build: give the definition with -f FILE\n"},
		{[]string{"help", "bogus"}, 0, "Unknown help topic", ""},
	} {
		code, stdout, stderr := run(t, tc.args...)
		if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.HasPrefix(stderr, tc.stderrPrefix) ||
			(tc.stderrPrefix == "" && stderr != "") || strings.Contains(stderr, "berth: exit status") {
			t.Errorf("berth %s = %d\nstdout %q\nstderr %q\nwant %d, stdout with %q, stderr starting %q",
				strings.Join(tc.args, " "), code, stdout, stderr, tc.code, tc.stdout, tc.stderrPrefix)
		}
	}
}
