package units

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/cpuset"
	"github.com/berthd/berth/internal/testenv"
)

// TestSystemdPlacement (run inside the test host by TestInTestHost) makes a
// scope with per-device I/O limits and a CPU set and changes them live:
// systemd holds what berth sent, and a device no longer listed loses its
// limit. (The test host has no io or cpuset controller to enforce them: this
// machine binds every controller to v1; the cgroupfs driver's files are
// checked by package container's TestIOAndCPUPlacement.)
func TestSystemdPlacement(t *testing.T) {
	ctx, s := needSystemd(t)
	name := testenv.UniqueName("place")
	sup := sleeper(t)
	t.Cleanup(func() { _ = sup.Process.Kill(); _, _ = sup.Process.Wait() })
	cpus, _ := cpuset.Parse("0")
	unit, _, err := s.StartScope(ctx, Scope{Machine: name, PIDs: []int{sup.Process.Pid}, StopTimeout: 5 * time.Second,
		Resources: Resources{IOWeight: 300, CPUSet: cpus, IO: []IOLimit{
			{Device: "/dev/vda", ReadBps: 10 << 20, WriteBps: 1 << 20},
			{Device: "/dev/vdb", WriteIOPS: 50},
		}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killScope(t, s, unit) })
	expectLines(t, unit, map[string][]string{
		"AllowedCPUs":         {"0"},
		"IOWeight":            {"300"},
		"IOReadBandwidthMax":  {"/dev/vda 10485760"},
		"IOWriteBandwidthMax": {"/dev/vda 1048576"},
		"IOReadIOPSMax":       nil,
		"IOWriteIOPSMax":      {"/dev/vdb 50"},
	})

	cpus, _ = cpuset.Parse("0-1")
	if err := s.SetResources(ctx, unit, Resources{CPUSet: cpus, IO: []IOLimit{{Device: "/dev/vdb", ReadIOPS: 7}}}); err != nil {
		t.Fatal(err)
	}
	expectLines(t, unit, map[string][]string{
		"AllowedCPUs":         {"0-1"},
		"IOReadBandwidthMax":  nil,
		"IOWriteBandwidthMax": nil,
		"IOReadIOPSMax":       {"/dev/vdb 7"},
		"IOWriteIOPSMax":      nil,
	})
	if err := s.SetResources(ctx, unit, Resources{}); err != nil {
		t.Fatal(err)
	}
	expectLines(t, unit, map[string][]string{"AllowedCPUs": {""}, "IOReadIOPSMax": nil})
}

// expectLines checks properties systemctl show prints once per entry (a
// device limit list); nil means no line.
func expectLines(t *testing.T, unit string, want map[string][]string) {
	t.Helper()
	for k, w := range want {
		out, err := exec.Command("systemctl", "show", unit, "-p", k).CombinedOutput()
		if err != nil {
			t.Fatalf("systemctl show %s: %v: %s", unit, err, out)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if v, ok := strings.CutPrefix(l, k+"="); ok {
				got = append(got, v)
			}
		}
		if strings.Join(got, "|") != strings.Join(w, "|") {
			t.Errorf("%s: %s = %q, want %q", unit, k, got, w)
		}
	}
}
