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

// TestDNSInTestHost is the network resolver on a systemd host that runs
// systemd-resolved: berthd starts it in a scope of its own
// (berth-dns-NET.scope in system.slice), so systemctl restart berthd leaves
// it running; machines resolve each other; resolved has the bridge's DNS
// server and domain, so the host resolves NAME.berth too.
func TestDNSInTestHost(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	guest := testenv.BusyboxGuest(t)
	h, _, exec := bootWithBerth(ctx, t, Options{Resolved: true, BindRO: []string{guest + ":/srv/bb"}})
	def := "apiVersion: berth/v1\nkind: Image\nname: bb\ndirectory: /srv/bb\n---\n" +
		"apiVersion: berth/v1\nkind: Network\nname: lan\nsubnet: 10.87.6.0/24\nnat: false\n---\n" +
		"apiVersion: berth/v1\nkind: Machine\nname: web\nimage: bb\nnetwork: {name: lan, address: 10.87.6.10}\n---\n" +
		"apiVersion: berth/v1\nkind: Machine\nname: cli\nimage: bb\nnetwork: lan\n"
	if err := os.WriteFile(filepath.Join(h.Dir, "etc/berth/machines/dns.yaml"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		out := exec("berth", "list")
		if strings.Count(out, " running") == 2 {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("the machines are not running:\n%s\n%s", out, exec("journalctl", "-u", "berthd", "--no-pager", "-n", "30"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// /run is the test host's own tmpfs: read inside.
	resolverPID := func() string { return exec("cat", "/run/berth/networks/lan/dns.pid") }
	scope := func() string {
		return strings.TrimSpace(exec("systemctl", "show", "berth-dns-lan.scope", "-p", "ActiveState", "--value")) + " in " +
			strings.TrimSpace(exec("systemctl", "show", "berth-dns-lan.scope", "-p", "Slice", "--value"))
	}
	if got := scope(); got != "active in system.slice" {
		t.Errorf("berth-dns-lan.scope: %q, want active in system.slice\n%s", got, exec("systemctl", "status", "--no-pager", "berth-dns-lan.scope"))
	}
	lookup := func(what string) {
		t.Helper()
		if out, err := h.Exec(ctx, "berth", "shell", "cli", "nslookup", "web.berth"); err != nil || !strings.Contains(string(out), "10.87.6.10") {
			t.Errorf("%s: nslookup web.berth in cli: %v\n%s", what, err, out)
		}
	}
	lookup("first start")

	// resolved routes the domain to the bridge's DNS server: the host
	// resolves the machines' names.
	if out := exec("resolvectl", "dns", "br-lan"); !strings.Contains(out, "10.87.6.1") {
		t.Errorf("resolvectl dns br-lan: %s", out)
	}
	if out := exec("resolvectl", "domain", "br-lan"); !strings.Contains(out, "berth") {
		t.Errorf("resolvectl domain br-lan: %s", out)
	}
	if out, err := h.Exec(ctx, "resolvectl", "query", "web.berth"); err != nil || !strings.Contains(string(out), "10.87.6.10") {
		t.Errorf("resolvectl query web.berth on the host: %v\n%s", err, out)
	}

	before := resolverPID()
	exec("systemctl", "restart", "berthd")
	exec("berth", "list") // berthd is back and has reconciled
	if after := resolverPID(); after != before {
		t.Errorf("systemctl restart berthd restarted the resolver: %s, then %s", before, after)
	}
	if got := scope(); got != "active in system.slice" {
		t.Errorf("after systemctl restart berthd, berth-dns-lan.scope: %q", got)
	}
	lookup("after systemctl restart berthd")
}
