package container_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/testenv"
)

// TestEphemeralRoot boots a busybox guest, with and without private users,
// on a scratch upper layer: what the guest writes is on a tmpfs of the
// requested size, a reboot starts from the image again, the image is never
// written, and once the machine ends nothing of the layer is mounted or kept
// on the host.
func TestEphemeralRoot(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	lower := testenv.BusyboxGuest(t)
	for _, users := range []bool{false, true} {
		name := "plain"
		if users {
			name = "users"
		}
		t.Run(name, func(t *testing.T) {
			cfg := newConfig(t, "eph")
			cfg.Boot = true
			cfg.Root = container.Root{Overlay: &container.Overlay{Lower: []string{lower}, Scratch: 64 << 20}}
			if users {
				cfg.Users = testUsers(t)
			}
			before := testenv.TreeSum(t, lower)
			m := start(t, cfg)
			m.WaitPhase(t, container.PhaseRunning, 1)
			out, code := m.sh(t, `echo kept > /etc/ephemeral-mark && cat /etc/ephemeral-mark && id -u && df -k / | tail -1`)
			if code != 0 || !strings.HasPrefix(out, "kept\n0\n") {
				t.Fatalf("write in the ephemeral root: exit %d:\n%s", code, out)
			}
			// The root's free space is the tmpfs's: 64 MiB, not the disk's.
			if f := strings.Fields(out); len(f) < 4 || f[len(f)-5] != "65536" {
				t.Errorf("df of the ephemeral root: %q, want 65536 KiB in all", out)
			}
			if out, code := m.sh(t, `dd if=/dev/zero of=/big bs=1M count=80 2>&1; echo rc=$?`); code != 0 || !strings.Contains(out, "rc=1") {
				t.Errorf("writing past the scratch size: %s", out)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := container.Dial(cfg.RuntimeDir)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Reboot(ctx); err != nil {
				t.Fatal(err)
			}
			m.WaitPhase(t, container.PhaseRunning, 2)
			if out, code := m.sh(t, `cat /etc/ephemeral-mark 2>&1; ls /big 2>&1`); code == 0 || strings.Contains(out, "kept") {
				t.Errorf("after a reboot the guest's writes are still there: %s", out)
			}
			if err := c.Terminate(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Wait(t); err != nil {
				t.Fatal(err)
			}
			if after := testenv.TreeSum(t, lower); after != before {
				t.Errorf("the image changed under an ephemeral machine:\nbefore %s\nafter  %s", before, after)
			}
			mounts, err := os.ReadFile("/proc/self/mountinfo")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(mounts), cfg.RuntimeDir) {
				t.Errorf("mounts left under %s after the machine ended", cfg.RuntimeDir)
			}
			if ents, err := os.ReadDir(rundir.Dir(cfg.RuntimeDir).Scratch()); err != nil || len(ents) != 0 {
				t.Errorf("the scratch mount point after the machine ended: %v %v, want empty", ents, err)
			}
		})
	}
}

// TestEphemeralDebian boots the Debian systemd guest on an ephemeral root
// with private users (an idmapped tmpfs upper layer): systemd reaches
// running, takes the machine ID berth gives it (the image's is empty), and
// what it wrote at boot (the journal, machine-id) stays off the image.
func TestEphemeralDebian(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	lower := testenv.DebianGuest(t)
	cfg := newConfig(t, "ephdeb")
	cfg.Boot = true
	cfg.Root = container.Root{Overlay: &container.Overlay{Lower: []string{lower}, Scratch: 256 << 20}}
	cfg.Users = testUsers(t)
	before := testenv.TreeSum(t, lower)
	m := start(t, cfg)
	m.WaitPhase(t, container.PhaseRunning, 1)
	out, code := m.sh(t, `cat /etc/machine-id; systemctl is-system-running 2>&1; true`)
	if code != 0 || !strings.HasPrefix(out, cfg.UUID+"\n") {
		t.Errorf("machine ID and state (exit %d): %q, want %s first", code, out, cfg.UUID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := container.Dial(cfg.RuntimeDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Poweroff(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(t); err != nil {
		t.Fatal(err)
	}
	if after := testenv.TreeSum(t, lower); after != before {
		t.Errorf("the Debian image changed under an ephemeral machine")
	}
}
