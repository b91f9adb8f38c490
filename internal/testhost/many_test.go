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

// manyEnv sets how many machines TestManyInTestHost declares: 12 unless set
// (`make bench BENCH=hostboot` runs it with 50).
const manyEnv = "BERTH_TEST_MANY"

func manyCount(t *testing.T) int {
	v := os.Getenv(manyEnv)
	if v == "" {
		return 12
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 200 {
		t.Fatalf("%s=%q: want a number of machines from 1 to 200", manyEnv, v)
	}
	return n
}

// TestManyInTestHost is issue 17's host story on a real systemd host: N
// declared Debian machines come up from one apply; the host's shutdown powers
// every guest off cleanly (no scope timed out or was killed); at the next boot
// berthd.service starts without a timeout or a restart and brings every
// machine back to running with no failed unit in any guest. The figures (all
// running after apply, host shutdown, host boot to all running) are logged as
// "figure:" lines, which the hostboot bench reads.
func TestManyInTestHost(t *testing.T) {
	testenv.SkipIfShort(t)
	n := manyCount(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	guest := testenv.DebianGuest(t)
	h, _, exec := bootWithBerth(ctx, t, Options{BindRO: []string{guest + ":/srv/guest"}})
	image := "apiVersion: berth/v1\nkind: Image\nname: deb\ndirectory: /srv/guest\n"
	names := make([]string, n)
	var def strings.Builder
	def.WriteString(image)
	for i := range names {
		names[i] = fmt.Sprintf("m%02d", i)
		fmt.Fprintf(&def, "---\napiVersion: berth/v1\nkind: Machine\nname: %s\nimage: deb\n", names[i])
	}
	// The image first, on its own: the figures are the machines'.
	if err := os.WriteFile(filepath.Join(h.Dir, "root/many.yaml"), []byte(image), 0o644); err != nil {
		t.Fatal(err)
	}
	exec("berth", "apply", "/root/many.yaml")
	if err := os.WriteFile(filepath.Join(h.Dir, "root/many.yaml"), []byte(def.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	exec("berth", "apply", "/root/many.yaml")
	waitAllRunning(ctx, t, h, names, 3*time.Minute, "first apply")
	t.Logf("figure: apply: %d machines running %.2f s after apply started", n, time.Since(start).Seconds())
	checkGuests(ctx, t, h, names, "after the first apply")

	// Host shutdown: systemd stops berthd, then every machine's scope, whose
	// controller (the supervisor) powers its guest off.
	start = time.Now()
	if err := h.Poweroff(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("figure: shutdown: the host with %d machines powered off in %.2f s", n, time.Since(start).Seconds())
	if err := h.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	// Every scope of the previous boot was stopped, none timed out or was
	// killed.
	prev := exec("journalctl", "-b", "-1", "--no-pager", "-o", "cat", "_PID=1")
	for _, m := range names {
		scope := "machine-" + m + ".scope"
		if !strings.Contains(prev, "Stopped "+scope) {
			t.Errorf("the previous boot's journal has no clean stop of %s", scope)
		}
	}
	for _, line := range strings.Split(prev, "\n") {
		if strings.Contains(line, "machine-") && (strings.Contains(line, "timed out") || strings.Contains(line, "SIGKILL") || strings.Contains(line, "Failed with result")) {
			t.Errorf("the previous boot's shutdown: %s", line)
		}
	}
	back := waitAllRunning(ctx, t, h, names, 3*time.Minute, "after the reboot")
	t.Logf("figure: boot: the host booted in %.2f s and all %d machines were running %.2f s later: %.2f s from starting the host",
		h.BootTime.Seconds(), n, back.Seconds(), (h.BootTime + back).Seconds())
	// berthd's own start-up: no timeout, no restart.
	show := exec("systemctl", "show", "berthd", "-p", "Result", "-p", "NRestarts", "-p", "ActiveState")
	for _, want := range []string{"Result=success", "NRestarts=0", "ActiveState=active"} {
		if !strings.Contains(show, want) {
			t.Errorf("berthd.service after the boot with %d machines: %s", n, show)
			break
		}
	}
	if j := exec("journalctl", "-b", "--no-pager", "-o", "cat", "-u", "berthd"); strings.Contains(j, "timed out") || strings.Contains(j, "level=ERROR") {
		t.Errorf("berthd's journal of the boot:\n%s", j)
	}
	checkGuests(ctx, t, h, names, "after the reboot")
}

// waitAllRunning waits until berth list says every one of names is running
// and returns how long that took; it fails the test after limit.
func waitAllRunning(ctx context.Context, t *testing.T, h *Host, names []string, limit time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		out, err := h.Exec(ctx, "berth", "list", "-o", "json")
		var ms []listed
		running := 0
		if err == nil && json.Unmarshal(out, &ms) == nil {
			for _, m := range ms {
				if m.State == "running" {
					running++
				}
			}
		}
		if running >= len(names) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			list, _ := h.Exec(ctx, "berth", "list")
			j, _ := h.Exec(ctx, "journalctl", "-u", "berthd", "--no-pager", "-n", "40")
			t.Fatalf("%s: %d of %d machines running after %s:\n%s\n%s", what, running, len(names), limit, list, j)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkGuests asks each guest's systemd how it is (through machined, as
// systemctl -M does) and fails the test for each one that is not running:
// a failed unit in any guest is a failure. A guest still starting units
// after READY=1 is given a while.
func checkGuests(ctx context.Context, t *testing.T, h *Host, names []string, what string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for _, m := range names {
		for {
			out, _ := h.Exec(ctx, "systemctl", "-M", m, "is-system-running")
			st := strings.TrimSpace(string(out))
			if st == "running" {
				break
			}
			if st != "starting" && st != "initializing" || time.Now().After(deadline) {
				failed, _ := h.Exec(ctx, "systemctl", "-M", m, "--failed", "--no-pager", "--no-legend")
				t.Errorf("%s: guest %s is %q; failed units:\n%s", what, m, st, failed)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
