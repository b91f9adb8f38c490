package container_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
	"golang.org/x/sys/unix"
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
// read-only (remounted in place or bound afresh in a mount namespace of its
// own), and the masks on /proc and /sys cannot be undone nor /proc/sys and
// /sys remounted read-write.
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
		`echo "nofile=$(ulimit -Hn)"`,
		`touch /made-inside && chown 1000:1000 /made-inside && echo made`,
		`echo "idmapped=$(stat -c %u /mnt/idmapped/users-file) plain=$(stat -c %u /mnt/plain/users-file)"`,
		`touch /mnt/idmapped/new && echo "shared-new"`,
		`touch /mnt/ro/nope 2>/dev/null || echo "ro-denied"`,
		`echo "tmp=$(stat -c %u /mnt/tmp)"`,
		`umount /proc/sys 2>/dev/null || echo "umount-proc-sys-denied"`,
		`umount -l /proc 2>/dev/null || echo "umount-proc-denied"`,
		`mount -o remount,rw /sys 2>/dev/null || echo "remount-sys-denied"`,
		// A read-only mount locked by the user namespace stays read-only:
		// remounted in place (the superblock's way and the bind's), and as
		// a fresh (recursive: /proc/sys has locked mounts under it) bind of
		// it in a mount namespace of its own.
		`mount -o remount,rw /mnt/ro 2>/dev/null && echo "ro-remount-ALLOWED" || echo "ro-remount-denied"`,
		`mount -o remount,bind,rw /mnt/ro 2>/dev/null && echo "ro-remount-bind-ALLOWED" || echo "ro-remount-bind-denied"`,
		`touch /mnt/ro/nope 2>/dev/null && echo "ro-WRITABLE-after-remount" || echo "ro-still-read-only"`,
		`mount -o remount,rw /proc/sys 2>/dev/null && echo "remount-proc-sys-ALLOWED" || echo "remount-proc-sys-denied"`,
		`mount -o remount,bind,rw /proc/sys 2>/dev/null && echo "remount-bind-proc-sys-ALLOWED" || echo "remount-bind-proc-sys-denied"`,
		`mount -o remount,bind,rw /sys 2>/dev/null && echo "remount-bind-sys-ALLOWED" || echo "remount-bind-sys-denied"`,
		`rebind() { unshare -m sh -c "mkdir -p /tmp/rb && mount -o rbind $1 /tmp/rb 2>/dev/null || { echo rebind-$2-bind-refused; exit; }; echo rebind-$2-bound; mount -o remount,bind,rw /tmp/rb 2>/dev/null && echo rebind-$2-remount-ALLOWED || echo rebind-$2-remount-denied; awk '\$5 == \"/tmp/rb\" { print \"opts\", \"rebind-$2\", \$6 }' /proc/self/mountinfo"; }`,
		`rebind /mnt/ro ro; rebind /proc/sys proc-sys; rebind /sys sys`,
		`awk '$5 == "/mnt/ro" || $5 == "/proc/sys" || $5 == "/sys" { print "opts", $5, $6 }' /proc/self/mountinfo`,
		`mknod /dev/sda1 b 8 1 2>/dev/null || echo "mknod-denied"`,
		// The guest's own shutdown unmounts the binds it was given.
		`umount /mnt/plain && echo "bind-unmounted"`,
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
		"id=0:0", fmt.Sprintf("map= 0 %d 65536", cfg.Users.Base), "nofile=" + wantNoFile(t), "bind-unmounted", "made", "idmapped=1000 plain=65534",
		"shared-new", "ro-denied", "tmp=0",
		"umount-proc-sys-denied", "umount-proc-denied", "remount-sys-denied", "mknod-denied",
		"ro-remount-denied", "ro-remount-bind-denied", "ro-still-read-only",
		"remount-proc-sys-denied", "remount-bind-proc-sys-denied", "remount-bind-sys-denied",
		"rebind-ro-bound", "rebind-ro-remount-denied", "rebind-proc-sys-bound", "rebind-proc-sys-remount-denied",
		"rebind-sys-bound", "rebind-sys-remount-denied",
		"opts rebind-ro ro", "opts rebind-proc-sys ro", "opts rebind-sys ro", "opts /mnt/ro ro", "opts /proc/sys ro", "opts /sys ro",
	} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the guest did not say %q; console:\n%s", want, log)
		}
	}
	for _, l := range strings.Split(string(log), "\n") {
		l = strings.TrimSpace(l)
		f := strings.Fields(l)
		if strings.Contains(l, "ALLOWED") || strings.Contains(l, "WRITABLE") ||
			(len(f) == 3 && f[0] == "opts" && f[2] != "ro" && !strings.HasPrefix(f[2], "ro,")) {
			t.Errorf("the guest undid a read-only mount: %s", l)
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

// wantNoFile is the hard open-files limit a machine's init gets: nspawn's
// 524288, where this process may raise hard limits (CAP_SYS_RESOURCE), else
// the limit it has.
func wantNoFile(t *testing.T) string {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max >= 524288 {
		return strconv.FormatUint(lim.Max, 10)
	}
	if err := unix.Prlimit(0, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: lim.Cur, Max: lim.Max + 1}, nil); err != nil {
		t.Logf("this process cannot raise its hard open-files limit (%v): the machine keeps %d", err, lim.Max)
		return strconv.FormatUint(lim.Max, 10)
	}
	_ = unix.Prlimit(0, unix.RLIMIT_NOFILE, &lim, nil) // lowering is always allowed
	return "524288"
}
