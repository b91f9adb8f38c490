package testhost

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// machineStatus is what the test reads of `berth status NAME -o json`.
type machineStatus struct {
	State     string `json:"state"`
	LeaderPID int    `json:"leaderPID"`
	Users     *struct {
		Base uint32 `json:"base"`
		Size uint32 `json:"size"`
		Root string `json:"root"`
	} `json:"users"`
}

// TestPrivateUsersInTestHost: machines in user namespaces of their own (the
// default, privateUsers: pick) on a real systemd host. Each guest boots with
// no failed unit; the stock tools (machinectl shell and login, systemd-run -M)
// reach its root, uid 0 inside, in the range berth recorded, which
// systemd-machined reports too; two machines get disjoint ranges and one with
// privateUsers: false the host's users; a range is kept over berthd's
// restart, the machine's reboot and the host's; and systemd-nspawn -U started
// beside the machines does not pick a range berth holds.
func TestPrivateUsersInTestHost(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	guest := testenv.DebianGuest(t)
	h, _, exec := bootWithBerth(ctx, t, Options{BindRO: []string{guest + ":/srv/guest"}})
	def := "apiVersion: berth/v1\nkind: Image\nname: debian12\ndirectory: /srv/guest\n"
	for _, m := range []string{"u1", "u2"} {
		def += "---\napiVersion: berth/v1\nkind: Machine\nname: " + m + "\nimage: debian12\n"
	}
	def += "---\napiVersion: berth/v1\nkind: Machine\nname: h3\nimage: debian12\nprivateUsers: false\n"
	if err := os.WriteFile(filepath.Join(h.Dir, "etc/berth/machines/users.yaml"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	private := []string{"u1", "u2"}
	all := []string{"u1", "u2", "h3"}

	status := func(name string) machineStatus {
		t.Helper()
		var st machineStatus
		if err := json.Unmarshal([]byte(exec("berth", "status", name, "-o", "json")), &st); err != nil {
			t.Fatalf("berth status %s -o json: %v", name, err)
		}
		return st
	}
	waitRunning := func(what string, names ...string) time.Duration {
		t.Helper()
		start := time.Now()
		for _, m := range names {
			for {
				out, _ := h.Exec(ctx, "berth", "status", m, "-o", "json")
				var st machineStatus
				if json.Unmarshal(out, &st) == nil && st.State == "running" {
					break
				}
				if time.Since(start) > 60*time.Second {
					t.Fatalf("%s: %s is not running:\n%s\n%s\n%s", what, m, exec("berth", "list"), out, exec("journalctl", "-u", "berthd", "--no-pager", "-n", "30", "-o", "verbose", "--output-fields=MESSAGE,MACHINE,ERR"))
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		return time.Since(start)
	}
	// inside runs a command in a machine through machinectl shell, which
	// prints through a pty: lines end in \r\n.
	inside := func(m, script string) string {
		t.Helper()
		return strings.ReplaceAll(exec("machinectl", "shell", "-q", m, "/bin/sh", "-c", script), "\r", "")
	}
	uidMap := func(base uint32) string {
		if base == 0 {
			return "0 0 4294967295"
		}
		return fmt.Sprintf("0 %d 65536", base)
	}
	// lockFile is nspawn's lock of a range, on the host's /run (a tmpfs).
	lockFile := func(base uint32) error {
		_, err := h.Exec(ctx, "test", "-f", "/run/systemd/nspawn-uid/"+strconv.FormatUint(uint64(base), 10))
		return err
	}

	t.Logf("u1, u2 and h3 running %v after their definitions were written (image import included)", waitRunning("first start", all...))

	// The ranges: recorded, aligned, disjoint, and held with nspawn's lock.
	bases := map[string]uint32{}
	var recorded map[string]struct {
		Base uint32 `json:"base"`
	}
	if b, err := os.ReadFile(filepath.Join(h.Dir, "var/lib/berth/userns/ranges.json")); err != nil {
		t.Error(err)
	} else if err := json.Unmarshal(b, &recorded); err != nil {
		t.Errorf("ranges.json: %v\n%s", err, b)
	}
	for _, m := range private {
		st := status(m)
		if st.Users == nil {
			t.Fatalf("berth status %s shows no users: a machine with privateUsers: pick (the default) has a range", m)
		}
		u := *st.Users
		t.Logf("%s: users base %d size %d root %s", m, u.Base, u.Size, u.Root)
		if u.Size != 65536 || u.Base == 0 || u.Base%65536 != 0 {
			t.Errorf("%s's range: base %d size %d", m, u.Base, u.Size)
		}
		if u.Root == "" {
			t.Errorf("berth status %s: users.root (how the root maps into the range) is empty", m)
		}
		if r := recorded[m].Base; r != u.Base {
			t.Errorf("ranges.json has %s at %d, berth status at %d", m, r, u.Base)
		}
		if err := lockFile(u.Base); err != nil {
			t.Errorf("%s's range is not claimed with nspawn's lock file: %v", m, err)
		}
		bases[m] = u.Base
	}
	if b1, b2 := bases["u1"], bases["u2"]; b1 < b2+65536 && b2 < b1+65536 {
		t.Errorf("u1's range (%d) and u2's (%d) overlap", b1, b2)
	}
	if st := status("h3"); st.Users != nil {
		t.Errorf("h3 has privateUsers: false, yet berth status shows users %+v", *st.Users)
	}
	if _, ok := recorded["h3"]; ok {
		t.Errorf("ranges.json records a range for h3, which has privateUsers: false")
	}

	// Each guest's systemd finished booting with no failed unit.
	for _, m := range all {
		out, err := h.Exec(ctx, "berth", "shell", m, "systemctl", "is-system-running", "--wait")
		if got := strings.TrimSpace(string(out)); got != "running" {
			failed, _ := h.Exec(ctx, "berth", "shell", m, "systemctl", "--failed", "--no-pager")
			journal, _ := h.Exec(ctx, "berth", "shell", m, "journalctl", "-b", "--no-pager", "-p", "warning")
			t.Errorf("%s: systemctl is-system-running: %q (%v)\n%s\nwarnings:\n%s", m, got, err, failed, journal)
		}
		if failed := strings.TrimSpace(inside(m, "systemctl --failed --no-legend --plain")); failed != "" {
			t.Errorf("%s: systemctl --failed:\n%s", m, failed)
		}
	}

	// checkInside checks the machine through machined's tools: its
	// registration, and uid 0 inside with the recorded range in a shell and in
	// a transient unit of the guest's systemd.
	checkInside := func(when, m string, base uint32) {
		t.Helper()
		st := status(m)
		show := exec("machinectl", "show", m, "-p", "Leader", "-p", "Class", "-p", "Service", "-p", "Unit")
		for _, want := range []string{"Leader=" + strconv.Itoa(st.LeaderPID), "Class=container", "Service=berth", "Unit=machine-" + m + ".scope"} {
			if !strings.Contains(show, want+"\n") {
				t.Errorf("%s: machinectl show %s lacks %s:\n%s", when, m, want, show)
			}
		}
		// machined reads the shift from the leader's uid_map and shows it
		// when it is not 0.
		mstatus := exec("machinectl", "status", m, "--no-pager")
		shift := ""
		for _, line := range strings.Split(mstatus, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "UID Shift:"); ok {
				shift = strings.TrimSpace(v)
			}
		}
		if (base == 0 && shift != "") || (base != 0 && shift != "" && shift != strconv.FormatUint(uint64(base), 10)) {
			t.Errorf("%s: machinectl status %s shows UID Shift %q, berth's base is %d", when, m, shift, base)
		}
		if base != 0 && shift == "" {
			t.Logf("%s: machinectl status %s prints no UID Shift line", when, m)
		}
		if base != 0 {
			if err := lockFile(base); err != nil {
				t.Errorf("%s: %s's range is not claimed with nspawn's lock file: %v", when, m, err)
			}
		}
		// Seen from the host: the guest's init runs as the range's first UID.
		if got := strings.Join(strings.Fields(exec("cat", fmt.Sprintf("/proc/%d/uid_map", st.LeaderPID))), " "); got != uidMap(base) {
			t.Errorf("%s: %s's leader's uid_map, from the host: %q, want %q", when, m, got, uidMap(base))
		}
		if got := strings.TrimSpace(exec("stat", "-c", "%u", fmt.Sprintf("/proc/%d", st.LeaderPID))); got != strconv.FormatUint(uint64(base), 10) {
			t.Errorf("%s: %s's leader runs as host UID %s, want %d", when, m, got, base)
		}
		want := "uid=0 map=" + uidMap(base)
		script := `echo "uid=$(id -u) map=$(echo $(cat /proc/self/uid_map))"`
		if got := strings.TrimSpace(inside(m, script)); got != want {
			t.Errorf("%s: machinectl shell %s: %q, want %q", when, m, got, want)
		}
		if got := strings.TrimSpace(exec("systemd-run", "-M", m, "--wait", "--pipe", "-q", "/bin/sh", "-c", script)); got != want {
			t.Errorf("%s: systemd-run -M %s: %q, want %q", when, m, got, want)
		}
	}
	for _, m := range private {
		checkInside("first start", m, bases[m])
	}
	checkInside("first start", "h3", 0)
	if got := strings.Join(strings.Fields(exec("systemd-run", "-M", "u1", "--wait", "--pipe", "-q", "id", "-u")), " "); got != "0" {
		t.Errorf("systemd-run -M u1 --wait --pipe id -u: %q", got)
	}

	// machinectl login: the guest's container-getty@ on a pts gives a login
	// prompt; root logs in (with a password set for the test) and is uid 0 in
	// the range.
	exec("berth", "shell", "u1", "sh", "-c", "echo root:berth-test | chpasswd")
	login := func() {
		t.Helper()
		term, err := h.Terminal(ctx, "machinectl", "login", "u1")
		if err != nil {
			t.Fatal(err)
		}
		defer term.Close()
		step := func(want, send string) bool {
			t.Helper()
			if _, err := term.Expect(want, 20*time.Second); err != nil {
				t.Errorf("machinectl login u1: %v; the terminal shows:\n%s", err, testenv.Tail(term.Output(), 2000))
				return false
			}
			return term.Send(send) == nil
		}
		_ = step("Connected to machine u1", "\r") &&
			step("u1 login: ", "root\r") &&
			step("Password: ", "berth-test\r") &&
			step("# ", "echo uid=$(id -u) tty=$(tty) map=$(echo $(cat /proc/self/uid_map)); exit\r") &&
			step("uid=0 tty=/dev/pts/", "") &&
			step("map="+uidMap(bases["u1"]), "") &&
			// Logged out, the getty comes back: ^] three times within a
			// second leaves machinectl.
			step("u1 login: ", "\x1d\x1d\x1d")
		if err := term.Wait(10 * time.Second); err != nil {
			t.Errorf("machinectl login u1 after ^]^]^]: %v\n%s", err, testenv.Tail(term.Output(), 2000))
		}
	}
	login()

	// systemd-nspawn -U with u1's name would first try the range berth picked
	// for u1 (nspawn's own first candidate); berth holds its lock file, so
	// nspawn picks another, and none of berth's. nspawn runs as a service of the
	// host's systemd with a delegated cgroup, on a tiny tree of its own.
	nspawnRange := func() uint32 {
		t.Helper()
		tree := "/var/tmp/nspawn-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		exec("sh", "-c", "mkdir -p "+tree+"/usr "+tree+"/bin && cp /bin/busybox "+tree+"/bin/ && ln -s busybox "+tree+"/bin/cat")
		defer exec("rm", "-rf", tree)
		out := exec("systemd-run", "-q", "--wait", "--pipe", "--collect", "-p", "Delegate=yes", "--",
			"systemd-nspawn", "-q", "-U", "-M", "u1", "--register=no", "--keep-unit", "-D", tree, "/bin/cat", "/proc/self/uid_map")
		f := strings.Fields(out)
		if len(f) != 3 || f[0] != "0" || f[2] != "65536" {
			t.Fatalf("systemd-nspawn -U: uid_map %q", out)
		}
		base, _ := strconv.ParseUint(f[1], 10, 32)
		return uint32(base)
	}
	checkNspawn := func(when string) {
		t.Helper()
		got := nspawnRange()
		for m, b := range bases {
			if got == b {
				t.Errorf("%s: systemd-nspawn -U -M u1 beside the machines picked %d, %s's range", when, got, m)
			}
		}
	}

	// berthd's restart leaves the machines, their ranges and the locks alone.
	exec("systemctl", "restart", "berthd")
	for _, m := range private {
		if st := status(m); st.Users == nil || st.Users.Base != bases[m] || st.State != "running" {
			t.Errorf("after systemctl restart berthd, %s: %s, users %+v (base was %d)", m, st.State, st.Users, bases[m])
		}
	}
	checkNspawn("after berthd's restart")

	// machinectl reboot: a new leader, the same range.
	before := status("u1").LeaderPID
	exec("machinectl", "reboot", "u1")
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := status("u1")
		if st.LeaderPID != 0 && st.LeaderPID != before && st.State == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("machinectl reboot u1: leader %d before, now %d (%s)", before, st.LeaderPID, st.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := status("u1"); st.Users == nil || st.Users.Base != bases["u1"] {
		t.Errorf("after machinectl reboot u1, users %+v (base was %d)", st.Users, bases["u1"])
	}
	checkInside("after machinectl reboot", "u1", bases["u1"])

	// The host's reboot (its /run, with the lock files, is new): every machine
	// comes back with its range.
	if err := h.Poweroff(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("after the host's reboot: machines running %v after the host", waitRunning("after the host's reboot", all...))
	for _, m := range private {
		checkInside("after the host's reboot", m, bases[m])
	}
	checkInside("after the host's reboot", "h3", 0)
	checkNspawn("after the host's reboot")

	// The control: with u1 stopped its lock is gone and nspawn -U picks the
	// very range berth had given it, so the checks above were not luck.
	exec("berth", "stop", "u1")
	if err := lockFile(bases["u1"]); err == nil {
		t.Errorf("u1 is stopped, yet its lock file is there")
	}
	if got := nspawnRange(); got != bases["u1"] {
		t.Errorf("systemd-nspawn -U -M u1 with u1 stopped picked %d; berth gave u1 %d, which should be nspawn's first candidate for the name", got, bases["u1"])
	}
}
