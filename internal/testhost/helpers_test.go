package testhost

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
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

// waitRunning waits until `berth status NAME -o json` in h says running for
// each of names, within timeout from now, and fails the test (with berth
// list and berthd's last log lines) when one is not.
func waitRunning(ctx context.Context, t *testing.T, h *Host, timeout time.Duration, names ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, m := range names {
		for {
			out, _ := h.Exec(ctx, "berth", "status", m, "-o", "json")
			var st struct {
				State string `json:"state"`
			}
			if json.Unmarshal(out, &st) == nil && st.State == "running" {
				break
			}
			if time.Now().After(deadline) {
				list, _ := h.Exec(ctx, "berth", "list")
				journal, _ := h.Exec(ctx, "journalctl", "-u", "berthd", "--no-pager", "-n", "30")
				t.Fatalf("%s is not running after %s:\n%s\n%s\n%s", m, timeout, out, list, journal)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
