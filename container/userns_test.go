package container_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
)

// testUsers is a range of host IDs for one test's machine, in a part of
// nspawn's pick range that berth's own picks are unlikely to use on a test
// host, different for each test.
func testUsers(t *testing.T) *container.Users {
	h := fnv.New32a()
	h.Write([]byte(t.Name()))
	return &container.Users{Base: 0x60000000 + h.Sum32()%4096*65536, Size: 65536}
}

// TestPrivateUsers runs an application in a user namespace of its own over
// an idmapped overlay root: it is root inside and its range's first ID on
// the host, what it makes lands 0-owned on disk, a bound host file keeps its
// owner (idmapped) or shows the unmapped view, a read-only bind stays
// read-only, and the masks on /proc and /sys cannot be undone.
func TestPrivateUsers(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	lower := testenv.BusyboxGuest(t)
	cfg := newConfig(t, "users")
	overlayRoot(t, &cfg, lower)
	cfg.Users = testUsers(t)
	share := t.TempDir()
	if err := os.WriteFile(filepath.Join(share, "users-file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(share, "users-file"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	cfg.Mounts = []container.Mount{
		{Type: "bind", Source: share, Target: "/mnt/idmapped", Idmap: true},
		{Type: "bind", Source: share, Target: "/mnt/plain"},
		{Type: "bind", Source: share, Target: "/mnt/ro", Idmap: true, ReadOnly: true},
		{Type: "tmpfs", Target: "/mnt/tmp"},
	}
	script := strings.Join([]string{
		`echo "id=$(id -u):$(id -g)"`,
		`echo "map=$(cat /proc/self/uid_map | tr -s ' ')"`,
		`touch /made-inside && chown 1000:1000 /made-inside && echo made`,
		`echo "idmapped=$(stat -c %u /mnt/idmapped/users-file) plain=$(stat -c %u /mnt/plain/users-file)"`,
		`touch /mnt/idmapped/new && echo "shared-new"`,
		`touch /mnt/ro/nope 2>/dev/null || echo "ro-denied"`,
		`echo "tmp=$(stat -c %u /mnt/tmp)"`,
		`umount /proc/sys 2>/dev/null || echo "umount-proc-sys-denied"`,
		`umount -l /proc 2>/dev/null || echo "umount-proc-denied"`,
		`mount -o remount,rw /sys 2>/dev/null || echo "remount-sys-denied"`,
		`mknod /dev/sda1 b 8 1 2>/dev/null || echo "mknod-denied"`,
		`echo ready; read x`,
	}, "; ")
	cfg.Args = []string{"/bin/sh", "-c", script}
	m := start(t, cfg)
	m.WaitState(t, "the script", func(st container.State) bool {
		b, _ := os.ReadFile(cfg.ConsoleLog)
		return strings.Contains(string(b), "ready")
	})
	st, err := container.ReadState(cfg.RuntimeDir)
	if err != nil {
		t.Fatal(err)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.LeaderPID))
	if !strings.Contains(string(status), fmt.Sprintf("Uid:\t%d\t%d", cfg.Users.Base, cfg.Users.Base)) {
		t.Errorf("the machine's PID 1 on the host:\n%s", grepLines(string(status), "Uid:", "Gid:"))
	}
	log, _ := os.ReadFile(cfg.ConsoleLog)
	t.Logf("console:\n%s", log)
	for _, want := range []string{
		"id=0:0", fmt.Sprintf("map= 0 %d 65536", cfg.Users.Base), "made", "idmapped=1000 plain=65534",
		"shared-new", "ro-denied", "tmp=0",
		"umount-proc-sys-denied", "umount-proc-denied", "remount-sys-denied", "mknod-denied",
	} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the guest did not say %q; console:\n%s", want, log)
		}
	}
	upper := cfg.Root.Overlay.Upper
	if own := owner(t, filepath.Join(upper, "made-inside")); own != "1000:1000" {
		t.Errorf("a file the guest made and gave to 1000 is %s on disk, want 1000:1000", own)
	}
	if own := owner(t, filepath.Join(share, "new")); own != "0:0" {
		t.Errorf("a file the guest made in an idmapped bind is %s on the host, want 0:0", own)
	}
}

func owner(t *testing.T, path string) string {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Error(err)
		return ""
	}
	s := st.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", s.Uid, s.Gid)
}

func grepLines(s string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestPrivateUsersBoot boots the Debian guest in a user namespace of its
// own: READY=1 arrives, no unit fails on the console, and a poweroff ends it
// cleanly.
func TestPrivateUsersBoot(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	lower := testenv.DebianGuest(t)
	cfg := newConfig(t, "udeb")
	cfg.Boot = true
	overlayRoot(t, &cfg, lower)
	cfg.Users = testUsers(t)
	cfg.AllowTun = true
	m := start(t, cfg)
	m.WaitPhase(t, container.PhaseRunning, 1)
	c, err := container.Dial(cfg.RuntimeDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Poweroff(context.Background()); err != nil {
		t.Fatal(err)
	}
	ex, err := m.Wait(t)
	if err != nil || ex.Reason != container.ReasonPoweroff {
		t.Errorf("after poweroff: %+v, %v", ex, err)
	}
	log, _ := os.ReadFile(cfg.ConsoleLog)
	if strings.Contains(string(log), "FAILED") {
		t.Errorf("a unit failed:\n%s", log)
	}
	t.Logf("console:\n%s", log)
}
