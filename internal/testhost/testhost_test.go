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

func TestImage(t *testing.T) {
	testenv.SkipIfShort(t)
	root := Image(t)
	if _, err := os.Stat(filepath.Join(root, "usr/bin/machinectl")); err != nil {
		t.Errorf("the test host image has no machinectl: %v", err)
	}
}

// TestBerthInTestHost installs berth into a test host with `berth install
// --root`, boots it, and checks that berthd.service came up as a systemd service
// and that a declared machine runs in its machine-NAME.scope, registered with
// systemd-machined.
func TestBerthInTestHost(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	guest := testenv.DebianGuest(t)
	h, bindir, exec := bootWithBerth(ctx, t, Options{BindRO: []string{guest + ":/srv/guest"}})
	if got := strings.TrimSpace(exec("systemctl", "is-active", "berthd.service")); got != "active" {
		t.Fatalf("berthd.service is %s", got)
	}
	def := "apiVersion: berth/v1\nkind: Image\nname: debian12\ndirectory: /srv/guest\n---\n" +
		"apiVersion: berth/v1\nkind: Network\nname: lan\nsubnet: 10.87.5.0/24\nnat: false\n---\n" +
		"apiVersion: berth/v1\nkind: Machine\nname: m1\nimage: debian12\nnetwork:\n  name: lan\n  address: 10.87.5.10\n" +
		"resources:\n  memoryMax: 256M\n  cpus: 0.5\n"
	if err := os.WriteFile(filepath.Join(h.Dir, "etc/berth/machines/m1.yaml"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	// waitRunning waits until berth says m1 is running: its guest reported
	// READY=1 (or is-system-running said running).
	waitRunning := func() time.Duration {
		t.Helper()
		start := time.Now()
		for !strings.Contains(exec("berth", "list"), "m1       running") {
			if time.Since(start) > 30*time.Second {
				t.Fatalf("m1 is not running:\n%s", exec("berth", "list"))
			}
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(start)
	}
	waitListed := func(what string) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			out, _ := h.Exec(ctx, "machinectl", "list", "--no-legend")
			if strings.Contains(string(out), "m1") {
				return time.Since(start)
			}
			if time.Since(start) > 30*time.Second {
				out, _ := h.Exec(ctx, "journalctl", "--no-pager", "-n", "40")
				l, _ := h.Exec(ctx, "berth", "list")
				st, _ := h.Exec(ctx, "berth", "status", "m1")
				t.Fatalf("%s: m1 never showed up in machinectl list; berth list:\n%s\n%s\njournal:\n%s", what, l, st, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	d := waitListed("first start")
	t.Logf("m1 registered with systemd-machined %v after its definition was written (image import included)", d)
	if out := exec("machinectl", "list", "--no-legend"); !strings.Contains(out, "m1 container berth") {
		t.Errorf("machinectl list:\n%s", out)
	}
	props := exec("systemctl", "show", "machine-m1.scope", "-p", "MemoryMax", "-p", "CPUQuotaPerSecUSec", "-p", "Delegate", "-p", "Slice")
	for _, want := range []string{"MemoryMax=268435456", "CPUQuotaPerSecUSec=500ms", "Delegate=yes", "Slice=machine.slice"} {
		if !strings.Contains(props, want) {
			t.Errorf("systemctl show machine-m1.scope lacks %s:\n%s", want, props)
		}
	}
	if out := exec("systemctl", "status", "--no-pager", "machine-m1.scope"); !strings.Contains(out, "supervisor") || !strings.Contains(out, "payload") {
		t.Errorf("the scope is not split into supervisor and payload:\n%s", out)
	}
	// The supervisor runs from berth-stage, which berth install put beside
	// berthd (container.StageBinary), not from berthd itself.
	if out := exec("sh", "-c", `p=$(sed -n 's/.*"supervisorPid": *\([0-9]*\).*/\1/p' /run/berth/machines/m1/state.json); cmp -s /proc/$p/exe /usr/local/bin/berth-stage && echo berth-stage || echo "not berth-stage: pid $p"`); strings.TrimSpace(out) != "berth-stage" {
		t.Errorf("m1's supervisor: %s", out)
	}
	// Restarting berthd leaves the machine (its scope) alone.
	exec("systemctl", "restart", "berthd")
	if out := exec("systemctl", "is-active", "machine-m1.scope"); strings.TrimSpace(out) != "active" {
		t.Errorf("after systemctl restart berthd the scope is %s", out)
	}

	// Host shutdown: systemd stops berthd, then the scope; the scope's
	// controller (the supervisor) powers the guest off cleanly. After the next
	// boot berthd starts m1 again.
	start := time.Now()
	if err := h.Poweroff(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("powering off the test host with one machine took %v", d)
	} else {
		t.Logf("test host with m1 running powered off in %v", d)
	}
	if err := h.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	d = waitListed("after the reboot")
	dr := d + waitRunning()
	t.Logf("after the reboot: test host booted in %v; m1 registered %v and running (guest booted, READY=1) %v later: %v from starting the host to all machines running",
		h.BootTime, d, dr, h.BootTime+dr)
	prev := exec("journalctl", "-b", "-1", "--no-pager", "-o", "cat", "-u", "machine-m1.scope")
	if !strings.Contains(prev, "Stopped machine-m1.scope") || strings.Contains(prev, "SIGKILL") || strings.Contains(prev, "timed out") {
		t.Errorf("the scope's shutdown in the previous boot:\n%s", prev)
	}

	// The stock tools reach into the machine through systemd-machined.
	// machined knows the machine's host-side interface and, from inside, its address.
	if out := exec("machinectl", "status", "m1", "--no-pager"); !strings.Contains(out, "Iface: vb-m1") || !strings.Contains(out, "10.87.5.10") {
		t.Errorf("machinectl status m1:\n%s", out)
	}
	if out := exec("machinectl", "shell", "-q", "m1", "/bin/sh", "-c", "echo inside-$(cat /proc/1/comm)"); !strings.Contains(out, "inside-systemd") {
		t.Errorf("machinectl shell m1: %s", out)
	}
	if out := exec("systemd-run", "-M", "m1", "--wait", "-q", "--pipe", "/bin/echo", "via-run"); !strings.Contains(out, "via-run") {
		t.Errorf("systemd-run -M m1: %s", out)
	}
	// A stock tool stops the machine: systemctl stop asks the supervisor (the
	// scope's controller), which records why and powers the guest off; berth
	// holds it (docs/systemd.md).
	exec("systemctl", "stop", "machine-m1.scope")
	if out, _ := h.Exec(ctx, "machinectl", "list", "--no-legend"); strings.Contains(string(out), "m1") {
		t.Errorf("machinectl list after systemctl stop:\n%s", out)
	}
	if out := exec("berth", "list"); !strings.Contains(out, "m1       stopped (held)") {
		t.Errorf("after systemctl stop machine-m1.scope, berth list:\n%s", out)
	}
	if b, err := os.ReadFile(filepath.Join(h.Dir, "run/berth/machines/m1/systemd-stop.json")); err == nil {
		t.Logf("systemd-stop.json: %s", b)
	}

	// machinectl reboot: the guest reboots, berth keeps it running (a new leader).
	exec("berth", "start", "m1")
	waitRunning()
	leader := func() string {
		out, _ := h.Exec(ctx, "machinectl", "show", "m1", "-p", "Leader", "--value")
		return strings.TrimSpace(string(out))
	}
	before := leader()
	exec("machinectl", "reboot", "m1")
	for i := 0; i < 200; i++ {
		if l := leader(); l != "" && l != before {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after := leader(); after == "" || after == before {
		t.Errorf("machinectl reboot: leader %s before, %q after", before, after)
	}
	waitRunning()
	// machinectl terminate: machined stops the scope, as systemctl stop does.
	exec("machinectl", "terminate", "m1")
	for i := 0; i < 200 && !strings.Contains(exec("berth", "list"), "m1       stopped (held)"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if out := exec("berth", "list"); !strings.Contains(out, "m1       stopped (held)") {
		t.Errorf("after machinectl terminate, berth list:\n%s", out)
	}

	// berth uninstall and install on a running systemd host: the unit is
	// disabled and stopped, then enabled and started; configuration and machine
	// data survive.
	exec("berth", "uninstall")
	for _, gone := range []string{"usr/local/bin/berth", "usr/local/bin/berthd", "usr/local/bin/berth-stage", "etc/systemd/system/berthd.service", "etc/berth/install.manifest"} {
		if _, err := os.Stat(filepath.Join(h.Dir, gone)); !os.IsNotExist(err) {
			t.Errorf("after berth uninstall, /%s: %v", gone, err)
		}
	}
	for _, kept := range []string{"etc/berth/berthd.yaml", "etc/berth/machines/m1.yaml", "var/lib/berth/machines/m1"} {
		if _, err := os.Stat(filepath.Join(h.Dir, kept)); err != nil {
			t.Errorf("berth uninstall removed what it must keep: %v", err)
		}
	}
	if out, _ := h.Exec(ctx, "systemctl", "is-active", "berthd"); strings.TrimSpace(string(out)) == "active" {
		t.Error("berthd still runs after berth uninstall")
	}
	for _, b := range []string{"berth", "berthd", "berth-stage"} {
		if err := h.CopyIn(filepath.Join(bindir, b), "/root/bin/"+b); err != nil {
			t.Fatal(err)
		}
	}
	t.Log(exec("/root/bin/berth", "install"))
	if out := exec("systemctl", "is-enabled", "berthd"); strings.TrimSpace(out) != "enabled" {
		t.Errorf("after berth install: berthd.service is %s", out)
	}
	if out := exec("systemctl", "is-active", "berthd"); strings.TrimSpace(out) != "active" {
		t.Errorf("after berth install: berthd.service is %s", out)
	}
}
