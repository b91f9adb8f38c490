package testhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/spec"
)

// examplesDir is the repository's examples/.
func examplesDir(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "examples")
}

// examplesImage debootstraps the examples' Image outside the test host (which
// has no network), cached by its package list.
func examplesImage(t *testing.T, dir string) string {
	set, err := spec.Load(filepath.Join(dir, "images"))
	if err != nil || len(set.Images) != 1 || set.Images[0].Debootstrap == nil {
		t.Fatalf("examples/images: want one debootstrap Image: %v", err)
	}
	db := set.Images[0].Debootstrap
	h := sha256.Sum256([]byte(db.Suite + " " + strings.Join(db.Packages, " ")))
	return testenv.Debootstrap(t, "examples-"+hex.EncodeToString(h[:4]), db.Suite, db.Packages)
}

type listed struct {
	Name          string `json:"name"`
	State         string `json:"state"`
	LeaderPID     int    `json:"leaderPID"`
	Declared      bool   `json:"declared"`
	Desired       string `json:"desired"`
	SupervisorPID int    `json:"supervisorPID"`
}

// TestExamplesInTestHost is issue 7's whole story on a real systemd host: the
// examples applied inside a test host boot under machine-NAME.scope and show in
// machinectl; a limit changes live; berthd restarts without touching them; the
// host powers off (each guest shuts down cleanly) and boots with every machine
// back, data kept; machinectl poweroff holds a machine as documented.
func TestExamplesInTestHost(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := examplesDir(t)
	image := examplesImage(t, dir)
	h, _, exec := bootWithBerth(ctx, t, Options{BindRO: []string{image + ":/srv/image", dir + ":/srv/examples"}})
	list := func() map[string]listed {
		t.Helper()
		var ms []listed
		if err := json.Unmarshal([]byte(exec("berth", "list", "-o", "json")), &ms); err != nil {
			t.Fatal(err)
		}
		out := map[string]listed{}
		for _, m := range ms {
			out[m.Name] = m
		}
		return out
	}
	machines := []string{"alpha", "beta", "hello", "lab-1", "lab-2", "ticker", "web"}
	waitAll := func(what string) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			l := list()
			n := 0
			for _, m := range machines {
				if l[m].State == "running" {
					n++
				}
			}
			if n == len(machines) {
				return time.Since(start)
			}
			if time.Since(start) > 90*time.Second {
				t.Fatalf("%s: not all examples run after 90s:\n%s\n%s", what, exec("berth", "list"), exec("journalctl", "-u", "berthd", "--no-pager", "-n", "30"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	var err error
	// The examples' image cannot be built in here (no network): it is imported
	// from outside under its declared name, which apply then uses as is.
	exec("berth", "image", "import", "debian12", "/srv/image")
	exec("mkdir", "-p", "/var/lib/berth-examples/www")
	exec("sh", "-c", "echo served-by-web > /var/lib/berth-examples/www/index.html")
	exec("sh", "-c", "echo motd-of-web > /var/lib/berth-examples/web.motd") // web's login.motd credential
	exec("cp", "-r", "/srv/examples", "/root/examples")
	exec("berth", "apply", "/root/examples")
	t.Logf("examples running %v after apply returned", waitAll("first apply"))

	out := exec("machinectl", "list", "--no-legend")
	for _, m := range machines {
		found := false
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == m && f[1] == "container" && f[2] == "berth" {
				found = true
			}
		}
		if !found {
			t.Errorf("machinectl list lacks %s:\n%s", m, out)
		}
	}
	show := func(prop string) string {
		return strings.TrimSpace(exec("systemctl", "show", "machine-web.scope", "-p", prop, "--value"))
	}
	for prop, want := range map[string]string{"MemoryMax": "268435456", "CPUQuotaPerSecUSec": "500ms", "Delegate": "yes", "Slice": "machine.slice"} {
		if got := show(prop); got != want {
			t.Errorf("machine-web.scope %s = %q, want %q", prop, got, want)
		}
	}
	// hello's cpuset, through the supervisor's systemd driver.
	if got := strings.TrimSpace(exec("systemctl", "show", "machine-hello.scope", "-p", "AllowedCPUs", "--value")); got != "0" {
		t.Errorf("machine-hello.scope AllowedCPUs = %q, want 0", got)
	}
	// "running" is the guest's READY=1, which systemd sends once basic.target
	// is reached (as nspawn --notify-ready reports it); lighttpd, part of
	// multi-user.target, may start a moment later.
	var got []byte
	for i := 0; i < 100; i++ {
		if got, err = h.Exec(ctx, "busybox", "wget", "-qO-", "http://127.0.0.1:8080/"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || !strings.Contains(string(got), "served-by-web") {
		rules, _ := h.Exec(ctx, "nft", "list", "table", "inet", "berth")
		lighttpd, _ := h.Exec(ctx, "berth", "shell", "web", "systemctl", "status", "--no-pager", "lighttpd")
		direct, _ := h.Exec(ctx, "busybox", "wget", "-qO-", "http://10.87.0.10/")
		t.Errorf("web through its port forward on localhost: %v %q\nrules:\n%s\nlighttpd:\n%s\ndirect: %s", err, got, rules, lighttpd, direct)
	}
	// The demo network is IPv4 only; the forward answers on [::1] too (the
	// supervisor's loopback relay), whatever localhost resolves to first.
	if got, err := h.Exec(ctx, "busybox", "wget", "-qO-", "http://[::1]:8080/"); err != nil || !strings.Contains(string(got), "served-by-web") {
		t.Errorf("web through its port forward on [::1]: %v %q", err, got)
	}
	if out, err := h.Exec(ctx, "berth", "shell", "alpha", "ping", "-c1", "-W2", "10.87.0.12"); err != nil {
		t.Errorf("alpha cannot reach beta over the bridge: %v\n%s", err, out)
	}
	// The network's resolver, in a scope of its own: alpha finds beta by name.
	resolves := func(when string) {
		t.Helper()
		if out, err := h.Exec(ctx, "berth", "shell", "alpha", "getent", "hosts", "beta.berth"); err != nil || !strings.Contains(string(out), "10.87.0.12") {
			t.Errorf("%s: alpha cannot resolve beta.berth: %v\n%s", when, err, out)
		}
		if out, _ := h.Exec(ctx, "systemctl", "is-active", "berth-dns-demo.scope"); strings.TrimSpace(string(out)) != "active" {
			t.Errorf("%s: berth-dns-demo.scope is %s", when, out)
		}
	}
	resolves("first apply")
	// ticker is running only after its systemd-notify --ready; its health
	// check passes over its loopback, and its history is the supervisor's.
	tickerHealth := func() (status string, checks int, notify string) {
		t.Helper()
		var s struct {
			Health *struct {
				Status string `json:"status"`
				Checks int    `json:"checks"`
			} `json:"health"`
			NotifyStatus string `json:"notifyStatus"`
		}
		if err := json.Unmarshal([]byte(exec("berth", "status", "ticker", "-o", "json")), &s); err != nil {
			t.Fatal(err)
		}
		if s.Health == nil {
			return "", 0, s.NotifyStatus
		}
		return s.Health.Status, s.Health.Checks, s.NotifyStatus
	}
	for deadline := time.Now().Add(40 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		status, _, notify := tickerHealth()
		if status == "healthy" && notify == "serving on 127.0.0.1:8081" {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("ticker: health %q, STATUS= %q after 40s:\n%s", status, notify, exec("berth", "status", "ticker"))
			break
		}
	}

	// A limit changed in the definition changes the scope's property live.
	webLeader := list()["web"].LeaderPID
	exec("sed", "-i", "s/memoryMax: 256M/memoryMax: 384M/", "/root/examples/machines/web.yaml")
	// plan exits 2 when there are changes.
	if out, _ := h.Exec(ctx, "berth", "plan", "/root/examples"); !strings.Contains(string(out), "~ machine web: update (applied live") {
		t.Errorf("berth plan after a limit change:\n%s", out)
	}
	exec("berth", "apply", "/root/examples")
	if got := show("MemoryMax"); got != strconv.Itoa(384<<20) {
		t.Errorf("after changing memoryMax to 384M, machine-web.scope MemoryMax = %s", got)
	}
	if l := list()["web"].LeaderPID; l != webLeader {
		t.Errorf("the live limit change restarted web (leader %d → %d)", webLeader, l)
	}

	// Data written in the machines, and persistent journals to read after the
	// reboot.
	for _, m := range []string{"web", "alpha", "beta"} {
		exec("berth", "shell", m, "sh", "-c", "echo kept-"+m+" > /root/data.txt && mkdir -p /var/log/journal && journalctl --flush")
	}
	// systemctl restart berthd leaves the machines running.
	before := list()
	_, checksBefore, _ := tickerHealth()
	exec("systemctl", "restart", "berthd")
	if _, checks, _ := tickerHealth(); checks < checksBefore {
		t.Errorf("ticker's health checks went from %d to %d over a restart of berthd", checksBefore, checks)
	}
	for _, m := range machines {
		if l := list()[m]; l.State != "running" || l.LeaderPID != before[m].LeaderPID {
			t.Errorf("after systemctl restart berthd, %s is %s with leader %d (was %d)", m, l.State, l.LeaderPID, before[m].LeaderPID)
		}
	}
	resolves("after systemctl restart berthd")

	// Power the host off and boot it again: every machine comes back.
	start := time.Now()
	if err := h.Poweroff(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("test host with the examples powered off in %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if err := h.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	all := waitAll("after the reboot")
	t.Logf("test host boot to all machines running: %v (host booted in %v, machines running %v later)",
		(time.Since(start)).Round(time.Millisecond), h.BootTime.Round(time.Millisecond), all.Round(time.Millisecond))
	resolves("after the reboot")
	for _, m := range []string{"web", "alpha", "beta"} {
		if got := exec("berth", "shell", m, "cat", "/root/data.txt"); !strings.Contains(got, "kept-"+m) {
			t.Errorf("%s lost its data over the host's reboot: %q", m, got)
		}
		prev := exec("berth", "shell", m, "journalctl", "-b", "-1", "--no-pager", "-o", "cat")
		if !strings.Contains(prev, "Reached target") || !strings.Contains(prev, "Journal stopped") ||
			strings.Contains(prev, "SIGKILL") || strings.Contains(prev, "timed out") {
			t.Errorf("%s's journal of the boot before does not show an orderly shutdown:\n%s", m, testenv.Tail(prev, 3000))
		}
	}
	if got := show("MemoryMax"); got != strconv.Itoa(384<<20) {
		t.Errorf("after the reboot machine-web.scope MemoryMax = %s", got)
	}

	// machinectl poweroff: the guest powers off cleanly and berth holds it
	// (docs/systemd.md), until berth start.
	exec("machinectl", "poweroff", "web")
	deadline := time.Now().Add(30 * time.Second)
	for list()["web"].State != "stopped" {
		if time.Now().After(deadline) {
			t.Fatalf("machinectl poweroff web: %s", exec("berth", "list"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := exec("berth", "list"); !strings.Contains(out, "stopped (held)") {
		t.Errorf("after machinectl poweroff web, berth list:\n%s", out)
	}
	exec("berth", "start", "web")
	if l := list()["web"]; l.State != "running" && l.State != "booting" {
		t.Errorf("berth start web: %s", l.State)
	}
}
