package testhost

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// TestBootInTestHost: on a systemd host `berth boot` (no daemon) gives the
// machine its scope and a systemd-machined registration, as nspawn does, and a
// stock tool's poweroff ends it cleanly with exit 0.
func TestBootInTestHost(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	guest := testenv.DebianGuest(t)
	h, _, exec := bootWithBerth(ctx, t, Options{BindRO: []string{guest + ":/srv/guest"}})
	// berth boot needs a writable tree: a copy of the guest.
	exec("cp", "-a", "/srv/guest", "/var/tmp/bx")
	exec("systemd-run", "--unit=berth-boot-bx", "--property=Type=exec", "--remain-after-exit",
		"/usr/local/bin/berth", "boot", "-D", "/var/tmp/bx", "--name", "bx")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(exec("machinectl", "list", "--no-legend"), "bx") {
		if time.Now().After(deadline) {
			t.Fatalf("berth boot's machine never showed in machinectl list:\n%s", exec("journalctl", "-u", "berth-boot-bx", "--no-pager", "-n", "30"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := strings.TrimSpace(exec("systemctl", "show", "machine-bx.scope", "-p", "Delegate", "--value")); got != "yes" {
		t.Errorf("machine-bx.scope Delegate=%s", got)
	}
	// A poweroff before the guest's systemd handles signals would be lost
	// (PID 1 ignores what it has no handler for, under nspawn too): wait
	// until it has booted.
	deadline = time.Now().Add(60 * time.Second)
	for {
		out, _ := h.Exec(ctx, "systemctl", "-M", "bx", "is-system-running")
		if st := strings.TrimSpace(string(out)); st == "running" || st == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bx did not finish booting: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	exec("machinectl", "poweroff", "bx")
	deadline = time.Now().Add(30 * time.Second)
	for {
		st := strings.TrimSpace(exec("systemctl", "show", "berth-boot-bx", "-p", "SubState", "--value"))
		if st == "exited" || st == "failed" || st == "dead" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("berth boot did not end after machinectl poweroff (%s)", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code := strings.TrimSpace(exec("systemctl", "show", "berth-boot-bx", "-p", "ExecMainStatus", "--value")); code != "0" {
		t.Errorf("berth boot exited %s after machinectl poweroff, want 0:\n%s", code, exec("journalctl", "-u", "berth-boot-bx", "--no-pager", "-n", "30"))
	}
	if out, _ := h.Exec(ctx, "machinectl", "list", "--no-legend"); strings.Contains(string(out), "bx") {
		t.Errorf("bx still registered after it ended:\n%s", out)
	}
}
