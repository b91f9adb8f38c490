package testhost

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// TestBindInTestHost: on a systemd host, stock `machinectl bind` (systemd-machined's
// BindMountMachine, through the machine's /run/host/incoming) binds a host
// directory into a running berth machine with privateUsers: false, read-write
// and read-only, with --mkdir; machined refuses it for a machine with private
// users (its own rule), where `berth bind` does it, idmapped; and the
// propagation directory is gone once the machines have stopped.
func TestBindInTestHost(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bb := testenv.BusyboxGuest(t)
	h, _, exec := bootWithBerth(ctx, t, Options{BindRO: []string{bb + ":/srv/bb"}})
	def := "apiVersion: berth/v1\nkind: Image\nname: bb\ndirectory: /srv/bb\n" +
		"---\napiVersion: berth/v1\nkind: Machine\nname: bu\nimage: bb\n" +
		"---\napiVersion: berth/v1\nkind: Machine\nname: bh\nimage: bb\nprivateUsers: false\n"
	if err := os.WriteFile(filepath.Join(h.Dir, "etc/berth/machines/bind.yaml"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	waitRunning(ctx, t, h, 90*time.Second, "bu", "bh")
	exec("sh", "-c", "mkdir -p /srv/share && echo from-the-host > /srv/share/f && chown 1000:1000 /srv/share/f")
	in := func(m, script string) (string, error) {
		out, err := h.Exec(ctx, "berth", "shell", m, "/bin/sh", "-c", script)
		return string(out), err
	}

	// machinectl bind, as for an nspawn machine.
	t0 := time.Now()
	exec("machinectl", "bind", "--mkdir", "bh", "/srv/share", "/mnt/share")
	t.Logf("machinectl bind: %v", time.Since(t0))
	exec("machinectl", "bind", "--mkdir", "--read-only", "bh", "/srv/share", "/mnt/ro")
	out, err := in("bh", "cat /mnt/share/f; echo owner=$(stat -c %u /mnt/share/f); touch /mnt/share/new && echo rw-ok; touch /mnt/ro/x 2>&1")
	t.Logf("bh: %s", out)
	for _, w := range []string{"from-the-host", "owner=1000", "rw-ok", "Read-only file system"} {
		if !strings.Contains(out, w) {
			t.Errorf("bh, after machinectl bind: %q lacks %q (%v)", out, w, err)
		}
	}
	if out, err := h.Exec(ctx, "test", "-e", "/srv/share/new"); err != nil {
		t.Errorf("a file made in machinectl's bind is not on the host: %v %s", err, out)
	}
	// machined's own rule for machines in a user namespace.
	if out, err := h.Exec(ctx, "machinectl", "bind", "--mkdir", "bu", "/srv/share", "/mnt/share"); err == nil || !strings.Contains(string(out), "user namespacing") {
		t.Errorf("machinectl bind on a machine with private users: %v %s", err, out)
	}
	// berth bind does it, idmapped.
	t0 = time.Now()
	got := exec("berth", "bind", "bu", "/srv/share", "/mnt/share", "--mkdir")
	t.Logf("berth bind: %v: %s", time.Since(t0), got)
	if !strings.Contains(got, "idmapped") {
		t.Errorf("berth bind: %s", got)
	}
	out, err = in("bu", "cat /mnt/share/f; echo owner=$(stat -c %u /mnt/share/f)")
	if !strings.Contains(out, "from-the-host") || !strings.Contains(out, "owner=1000") {
		t.Errorf("bu, after berth bind: %q (%v)", out, err)
	}
	// Only the propagation directories themselves stay mounted on the host.
	for _, l := range strings.Split(exec("findmnt", "-rn", "-o", "TARGET"), "\n") {
		if strings.HasPrefix(l, "/run/systemd/nspawn/propagate/") && strings.Count(l, "/") > 5 {
			t.Errorf("a bind's leftover on the host: %s", l)
		}
	}

	exec("berth", "stop", "bu", "bh")
	deadline := time.Now().Add(60 * time.Second)
	for {
		mi := exec("findmnt", "-rn", "-o", "TARGET")
		ls, _ := h.Exec(ctx, "ls", "/run/systemd/nspawn/propagate")
		if !strings.Contains(mi, "/run/systemd/nspawn/propagate") && strings.TrimSpace(string(ls)) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the machines stopped: mounts %s; propagation directories %q", mi, ls)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
