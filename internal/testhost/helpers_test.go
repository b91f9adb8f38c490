package testhost

import (
	"context"
	"strings"
	"testing"
)

// bootWithBerth makes a test host with opt, installs this tree's berth into it
// with `berth install --root`, boots it, and returns it with the directory of the
// binaries and an exec that fails the test when a command fails.
func bootWithBerth(ctx context.Context, t *testing.T, opt Options) (*Host, string, func(args ...string) string) {
	t.Helper()
	h := New(t, opt)
	bindir := BuildBerth(t)
	if err := h.Install(ctx, bindir); err != nil {
		t.Fatal(err)
	}
	if err := h.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	return h, bindir, func(args ...string) string {
		t.Helper()
		out, err := h.Exec(ctx, args...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
}
