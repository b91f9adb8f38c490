package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/berthd/berth/machined"
)

// berthd runs berthd in this process with args, as main does, and returns its
// exit status, stdout and stderr.
func berthd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestRunWithoutServing: the flags that end berthd before it serves, with
// their exit status and output. (No case here may reach serve: it would run a
// daemon on this host.)
func TestRunWithoutServing(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string // a part of stderr
	}{
		{[]string{"--version"}, 0, "berthd " + machined.Version + "\n", ""},
		{[]string{"-h"}, 0, "", "usage: berthd [--config FILE]\n"},
		{[]string{"--bogus"}, 2, "", "flag provided but not defined: -bogus\nusage: berthd"},
	} {
		code, stdout, stderr := berthd(tc.args...)
		if code != tc.code || stdout != tc.stdout || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("berthd %s = %d\nstdout %q\nstderr %q\nwant %d, stdout %q, stderr with %q",
				strings.Join(tc.args, " "), code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
		}
	}
}
