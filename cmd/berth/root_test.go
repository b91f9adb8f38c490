package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

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
