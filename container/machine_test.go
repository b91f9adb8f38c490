package container_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
)

// TestDebianMachine boots the Debian 12 systemd guest once and checks, on that
// one machine, everything a booted guest must get right; then a reboot and a
// poweroff from inside. It does so twice: with the host's users, and in a
// user namespace of the machine's own (with /dev/net/tun allowed, as the
// escape suite's machines have it).
func TestDebianMachine(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	t.Run("host users", func(t *testing.T) { testDebianMachine(t, false) })
	t.Run("private users", func(t *testing.T) { testDebianMachine(t, true) })
}

func testDebianMachine(t *testing.T, privateUsers bool) {
	lower := testenv.DebianGuest(t)
	cfg := newConfig(t, "deb")
	cfg.Boot = true
	overlayRoot(t, &cfg, lower)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Mounts = []container.Mount{
		{Type: "bind", Source: self, Target: "/opt/probe", ReadOnly: true},
		{Type: "tmpfs", Target: "/scratch", Size: 8 << 20},
		// Idmapped in a user namespace: the host's root-owned directory is
		// the machine's root's, so only the read-only mount refuses a write.
		{Type: "bind", Source: t.TempDir(), Target: "/data", ReadOnly: true, Idmap: privateUsers},
	}
	cfg.Resources = container.Resources{PidsMax: 400, MemoryMax: 256 << 20}
	if privateUsers {
		cfg.Users = testUsers(t)
		cfg.AllowTun = true
	}
	ptys := ptyCount(t)
	m := start(t, cfg)
	st := m.WaitPhase(t, container.PhaseRunning, 1)

	t.Run("running with no failed units", func(t *testing.T) {
		out, code := m.sh(t, "systemctl is-system-running --wait; systemctl --failed --no-legend --plain")
		if code != 0 || strings.TrimSpace(out) != "running" {
			t.Fatalf("is-system-running: exit %d, output:\n%s", code, out)
		}
	})
	t.Run("state", func(t *testing.T) {
		if st.Init != "systemd" || st.LeaderPID <= 0 || st.ReadyAt.IsZero() || !st.SupervisorAlive() {
			t.Fatalf("state: %+v", st)
		}
		c, err := container.Dial(cfg.RuntimeDir)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := c.Status(context.Background())
		if err != nil || s2.Phase != container.PhaseRunning || s2.LeaderPID != st.LeaderPID {
			t.Fatalf("status over the control socket: %+v, %v", s2, err)
		}
		u, err := container.Usage(st.CgroupPath)
		if err != nil || u.MemoryBytes <= 0 || u.Pids <= 0 || u.CPU <= 0 {
			t.Fatalf("usage: %+v, %v", u, err)
		}
	})
	t.Run("container interface", func(t *testing.T) {
		out, code := m.sh(t, `echo "comm=$(cat /proc/1/comm)"
			echo "container=$(tr '\0' '\n' </proc/1/environ | grep '^container=')"
			echo "uuid=$(cat /run/host/container-uuid)"
			echo "manager=$(cat /run/host/container-manager)"
			echo "virt=$(systemd-detect-virt)"
			echo "cgroupfs=$(stat -fc %T /sys/fs/cgroup)"
			echo "console=$(stat -c %t:%T /dev/console)"
			test -c /dev/net/tun && echo tun=yes || echo tun=no
			ls /dev/sd* /dev/vd* 2>/dev/null | head -1 | sed 's/^/block=/'
			echo "bootid=$(cat /proc/sys/kernel/random/boot_id)"
			echo "uidmap=$(tr -s ' ' </proc/1/uid_map)"`)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		want := []string{"comm=systemd", "container=container=berth", "uuid=" + cfg.UUID[:8] + "-", "manager=berth",
			"cgroupfs=cgroup2fs", "console=88:", "tun=no", "uidmap= 0 0 4294967295"}
		if privateUsers {
			want[6], want[7] = "tun=yes", fmt.Sprintf("uidmap= 0 %d 65536", cfg.Users.Base)
		}
		for _, want := range want {
			if !strings.Contains(out, want) {
				t.Errorf("missing %q in:\n%s", want, out)
			}
		}
		hostBoot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if strings.Contains(out, "bootid="+strings.TrimSpace(string(hostBoot))) || !strings.Contains(out, "bootid=") {
			t.Errorf("the guest should have a boot ID of its own:\n%s", out)
		}
		if strings.Contains(out, "block=") {
			t.Errorf("a block device is visible:\n%s", out)
		}
		if privateUsers {
			// The guest's PID 1 is the range's first ID on the host.
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.LeaderPID))
			if !strings.Contains(string(status), fmt.Sprintf("Uid:\t%d\t%d", cfg.Users.Base, cfg.Users.Base)) {
				t.Errorf("the machine's PID 1 on the host:\n%s", grepLines(string(status), "Uid:", "Gid:"))
			}
		}
	})
	t.Run("tun", func(t *testing.T) {
		// A tun link of the guest's own: with private users the machine has
		// /dev/net/tun (AllowTun), and its root may make a link in its
		// network namespace; without, it has no node at all.
		out, _ := m.sh(t, "/opt/probe tun", "_BERTH_STAGE=probe")
		want := "tun: open /dev/net/tun: no such file or directory"
		if privateUsers {
			want = "tun: ok"
		}
		if !strings.Contains(out, want) {
			t.Errorf("probe: missing %q in:\n%s", want, out)
		}
	})
	if privateUsers {
		t.Run("own user counts", func(t *testing.T) {
			// The machine's user namespace is owned by its root's UID on the
			// host, so the per-user counts spanning namespaces are the
			// machine's own: a guest that takes every inotify instance it
			// may leaves the host's root (and every other machine) theirs.
			st, err := container.ReadState(cfg.RuntimeDir)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", st.LeaderPID))
			if err != nil {
				t.Fatal(err)
			}
			owner, err := unix.IoctlGetInt(int(f.Fd()), unix.NS_GET_OWNER_UID)
			f.Close()
			if err != nil || uint32(owner) != cfg.Users.Base {
				t.Errorf("the machine's user namespace is owned by UID %d (%v), want its base %d", uint32(owner), err, cfg.Users.Base)
			}
			done := make(chan string, 1)
			go func() { s, _ := m.sh(t, "_BERTH_STAGE=probe /opt/probe inotify /scratch/ino"); done <- s }()
			ino := fmt.Sprintf("/proc/%d/root/scratch/ino", st.LeaderPID)
			var out string
			for i := 0; i < 100 && out == ""; i++ {
				time.Sleep(100 * time.Millisecond)
				b, _ := os.ReadFile(ino)
				out = string(b)
			}
			fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
			if err != nil {
				t.Errorf("with the guest holding every inotify instance it could get (%s), the host's root cannot make one: %v", strings.TrimSpace(out), err)
			} else {
				unix.Close(fd)
			}
			_ = os.Remove(ino)
			if released := <-done; !strings.Contains(released, "released") || !strings.Contains(out, "instances, then too many open files") {
				t.Errorf("probe inotify: %q, then %q", out, released)
			}
			t.Logf("probe: %s", strings.TrimSpace(out))
		})
	}
	t.Run("isolation", func(t *testing.T) {
		out, _ := m.sh(t, "/opt/probe isolation", "_BERTH_STAGE=probe")
		// Loading a module fails: EPERM without CAP_SYS_MODULE (ENOSYS on a
		// kernel without modules, as on the CI machine).
		for _, p := range []string{"init_module: ok", "finit_module: ok", "sysrq: ok"} {
			if strings.Contains(out, p) {
				t.Errorf("probe: %q in:\n%s", p, out)
			}
		}
		want := []string{"mknod-block: operation not permitted", "mknod-char-null: ok", "write-proc-sys: open /proc/sys/kernel/hostname: read-only file system",
			"write-sys: open /sys/kernel/uevent_helper: read-only file system", "mount-host-root: no such file or directory",
			"settime: operation not permitted"}
		if privateUsers {
			// In a user namespace the kernel makes no device node at all
			// (mknod needs CAP_MKNOD in the initial one: the guest's are the
			// ones berth made) and mounts no block filesystem (ext4 is not
			// mountable in a user namespace: refused before the device is
			// looked up).
			want[1], want[4] = "mknod-char-null: operation not permitted", "mount-host-root: operation not permitted"
		}
		for _, want := range want {
			if !strings.Contains(out, want) {
				t.Errorf("probe: missing %q in:\n%s", want, out)
			}
		}
		// The host's mounts are not visible inside: every mount point is one
		// of the machine's own.
		mi, _ := m.sh(t, "cut -d' ' -f5 /proc/self/mountinfo")
		for _, mp := range strings.Fields(mi) {
			for _, host := range []string{"/work", "/var/cache", "/sys/fs/cgroup/", cfg.RuntimeDir, "/tmp/"} {
				if strings.HasPrefix(mp, host) {
					t.Errorf("host mount %s visible inside", mp)
				}
			}
		}
	})
	t.Run("enter", func(t *testing.T) {
		if _, code := m.sh(t, "exit 42"); code != 42 {
			t.Errorf("exit code: got %d, want 42", code)
		}
		if _, code := m.sh(t, "kill -TERM $$"); code != 128+15 {
			t.Errorf("killed by SIGTERM: got %d, want 143", code)
		}
		// A pty allocated inside the machine's own devpts.
		var out bytes.Buffer
		code, err := container.Enter(context.Background(), cfg.RuntimeDir, container.EnterOptions{
			Command: []string{"sh", "-c", "tty; cat /proc/self/cgroup | tail -1; echo pid1=$(ps -o comm= -p 1); exit 3"},
			TTY:     true, Rows: 40, Cols: 100, Stdout: &out})
		if err != nil || code != 3 {
			t.Fatalf("tty enter: %d, %v\n%s", code, err, out.String())
		}
		if !strings.Contains(out.String(), "/dev/pts/") || !strings.Contains(out.String(), "0::/init.scope") {
			t.Errorf("tty enter output:\n%s", out.String())
		}
		if _, err := container.Enter(context.Background(), cfg.RuntimeDir, container.EnterOptions{Command: []string{"no-such-command"}}); err == nil ||
			!strings.Contains(err.Error(), "not found") {
			t.Errorf("missing command: %v", err)
		}
	})
	t.Run("pty", func(t *testing.T) {
		// A pty the guest opens itself, through its devpts's ptmx.
		out, code := m.sh(t, "script -qec 'tty; stty size' /dev/null </dev/null; ls /dev/pts")
		if code != 0 || !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "ptmx") {
			t.Errorf("script (exit %d):\n%s", code, out)
		}
	})
	t.Run("console", func(t *testing.T) {
		// The console is the guest's getty: an empty line gets a new
		// prompt, a name typed on it is echoed and asked a password for.
		_, conn := attachWriter(t, cfg.RuntimeDir)
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		var seen bytes.Buffer
		// until reads the console until it shows text after what it showed
		// before.
		until := func(text string) bool {
			from := seen.Len()
			buf := make([]byte, 4096)
			for !bytes.Contains(seen.Bytes()[from:], []byte(text)) {
				n, err := conn.Read(buf)
				seen.Write(buf[:n])
				if err != nil {
					return false
				}
			}
			return true
		}
		write := func(s string) {
			if _, err := conn.Write([]byte(s)); err != nil {
				t.Fatal(err)
			}
		}
		write("\r")
		if !until("login: ") {
			t.Fatalf("no login prompt on the console: %q", seen.String())
		}
		// agetty drops what was typed in the first 100 ms of a prompt.
		time.Sleep(500 * time.Millisecond)
		write("berth-console-check\r")
		if !until("Password:") || !bytes.Contains(seen.Bytes(), []byte("berth-console-check")) {
			t.Errorf("the console's getty did not take a name: %q", seen.String())
		}
	})
	t.Run("login", func(t *testing.T) {
		// As machinectl login: the guest's getty on a new pty of its own
		// devpts, stopped again when the session ends.
		begin := time.Now()
		s := startLogin(t, cfg.RuntimeDir)
		if s.how != container.LoginGetty || !strings.HasPrefix(s.tty, "/dev/pts/") {
			t.Fatalf("login: %q on %q, want a getty on /dev/pts/N", s.how, s.tty)
		}
		unit := "container-getty@" + strings.TrimPrefix(s.tty, "/dev/pts/") + ".service"
		waitFor(t, "login", s.out, "login: ")
		t.Logf("login prompt on %s %v after the request", s.tty, time.Since(begin))
		if out, _ := m.sh(t, "systemctl is-active "+unit+"; stat -c %U:%G "+s.tty); out != "active\nroot:tty\n" {
			t.Errorf("%s, %s in the machine:\n%s", unit, s.tty, out)
		}
		// agetty drops what was typed in the first 100 ms of a prompt.
		time.Sleep(500 * time.Millisecond)
		s.send(t, "berth-login-check\r")
		waitFor(t, "login", s.out, "Password:")
		s.end(t)
		if err := testenv.Poll(10*time.Second, func() error {
			if out, _ := m.sh(t, "systemctl is-active "+unit); strings.TrimSpace(out) != "inactive" {
				return fmt.Errorf("%s is %s", unit, out)
			}
			return nil
		}); err != nil {
			t.Errorf("after the session: %v", err)
		}
	})
	t.Run("mounts", func(t *testing.T) {
		out, code := m.sh(t, "findmnt -no FSTYPE,OPTIONS /scratch; findmnt -no OPTIONS /data; touch /data/x 2>&1")
		if code == 0 || !strings.Contains(out, "tmpfs") || !strings.Contains(out, "size=8192k") || !strings.Contains(out, "Read-only file system") {
			t.Errorf("mounts (exit %d):\n%s", code, out)
		}
	})
	t.Run("limits", func(t *testing.T) {
		// A fork bomb stops at the pids limit; the host is fine.
		// dash gives up at the first failed fork, so the bomb runs in a
		// subshell; the count uses no fork (a glob); the sleeps end by
		// themselves.
		before, err := container.Usage(st.CgroupPath)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := m.sh(t, `(i=0; while [ $i -lt 600 ]; do sleep 3 >/dev/null 2>&1 & i=$((i+1)); done) 2>/dev/null; set -- /proc/[0-9]*; echo $#`)
		n := strings.Fields(out)
		if len(n) == 0 {
			t.Fatalf("fork bomb output: %q", out)
		}
		procs, _ := strconv.Atoi(n[len(n)-1])
		if procs >= 400 || procs < 100 {
			t.Errorf("fork bomb: %d processes inside, want it stopped below the pids limit 400:\n%s", procs, out)
		}
		// The bomb's sleeps end by themselves: the machine is back to the
		// tasks it had before (give or take a few a guest starts meanwhile),
		// with room under the limit for what comes next.
		var u container.ResourceUsage
		testenv.Eventually(t, 15*time.Second, func() error {
			if u, err = container.Usage(st.CgroupPath); err != nil || u.Pids > before.Pids+10 {
				return fmt.Errorf("%d tasks in the machine after the fork bomb, %d before (%v)", u.Pids, before.Pids, err)
			}
			return nil
		})
		t.Logf("fork bomb stopped at %d processes; %d tasks before it, %d after", procs, before.Pids, u.Pids)
		// Memory: allocating past the limit gets the allocator killed.
		out, code := m.sh(t, "/opt/probe alloc 400", "_BERTH_STAGE=probe")
		if code != 137 {
			t.Errorf("allocating 400 MiB under a 256 MiB limit: exit %d, want 137 (OOM kill):\n%s", code, out)
		}
		// Live update through the control socket.
		c, _ := container.Dial(cfg.RuntimeDir)
		if err := c.Update(context.Background(), container.Resources{PidsMax: 500, MemoryMax: 300 << 20, CPUs: 1.5}); err != nil {
			t.Fatal(err)
		}
		for ctrl, want := range map[string]string{"pids": "500", "memory": strconv.Itoa(300 << 20), "cpu": "150000"} {
			if got := testenv.CgroupLimit(t, st.CgroupPath, ctrl); got != want {
				t.Errorf("%s limit after update: %q, want %s", ctrl, got, want)
			}
		}
	})
	t.Run("reboot from inside", func(t *testing.T) {
		_, _ = m.sh(t, "systemctl reboot")
		st2 := m.WaitPhase(t, container.PhaseRunning, 2)
		if st2.SupervisorPID != st.SupervisorPID || st2.LeaderPID == st.LeaderPID {
			t.Fatalf("after reboot: %+v (before %+v)", st2, st)
		}
		if st2.Boots != 2 {
			t.Errorf("after reboot: boot %d, want 2", st2.Boots)
		}
		out, code := m.sh(t, "systemctl is-system-running --wait; systemctl --failed --no-legend --plain")
		if code != 0 || strings.TrimSpace(out) != "running" {
			t.Fatalf("after reboot: exit %d:\n%s", code, out)
		}
	})
	t.Run("poweroff from inside", func(t *testing.T) {
		_, _ = m.sh(t, "systemctl poweroff")
		ex, err := m.Wait(t)
		if ex.Code != 0 || ex.Reason != container.ReasonPoweroff || err != nil {
			t.Fatalf("exit: %v, %v", ex, err)
		}
		if l := leaks(t, cfg); len(l) > 0 {
			t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
		}
		// Other tests on this machine may open ptys meanwhile: allow a little.
		if n := ptysSettle(t, ptys); n > ptys {
			t.Errorf("ptys held by the supervisor: %d before, %d after", ptys, n)
		}
		log, _ := os.ReadFile(cfg.ConsoleLog)
		if !bytes.Contains(log, []byte("Welcome to")) || !bytes.Contains(log, []byte("Sending SIGTERM to remaining processes")) ||
			!bytes.Contains(log, []byte("Powering off.")) {
			t.Errorf("console log lacks boot or orderly shutdown:\n%s", testenv.Tail(log, 3000))
		}
		// No unit failed in either boot, and the guest's systemd unmounted
		// everything it tried to at poweroff, the definition's binds too
		// (the supervisor attaches them unlocked: attachBinds).
		for _, l := range strings.Split(string(log), "\n") {
			if strings.Contains(l, "FAILED") {
				t.Errorf("on the console: %s", l)
			}
		}
	})
}

// TestSIGTERMPowersOff starts a detached supervisor, as berthd does, sends it
// SIGTERM and expects a clean poweroff visible in the console log.
func TestSIGTERMPowersOff(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	lower := testenv.DebianGuest(t)
	cfg := newConfig(t, "term")
	cfg.Boot = true
	overlayRoot(t, &cfg, lower)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pid, err := container.SpawnDetached(ctx, cfg, "test-supervise")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A test that failed half-way: the machine is killed through its
		// supervisor, which then removes its cgroup; the supervisor itself
		// only if it does not end.
		st, err := container.ReadState(cfg.RuntimeDir)
		if err != nil || !st.SupervisorAlive() {
			return
		}
		if c, err := container.Dial(cfg.RuntimeDir); err == nil {
			_ = c.Kill(context.Background(), syscall.SIGKILL, "all")
		}
		if err := testenv.Poll(15*time.Second, func() error {
			if st.SupervisorAlive() {
				return errors.New("alive")
			}
			return nil
		}); err != nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	st, err := container.ReadState(cfg.RuntimeDir)
	if err != nil || st.SupervisorPID != pid || !st.SupervisorAlive() {
		t.Fatalf("state after SpawnDetached: %+v, %v", st, err)
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if !strings.HasPrefix(string(cmdline), "berth-supervisor "+cfg.Name) {
		t.Errorf("supervisor argv: %q", cmdline)
	}
	c, err := container.Dial(cfg.RuntimeDir)
	if err != nil {
		t.Fatal(err)
	}
	machinetest.WaitPhase(t, cfg.RuntimeDir, container.PhaseRunning, 1)
	waited := make(chan container.ExitStatus, 1)
	go func() {
		ex, err := c.Wait(ctx)
		if err != nil {
			t.Errorf("wait: %v", err)
		}
		waited <- ex
	}()
	// The wait request arrives first: the supervisor has read it before the
	// signal, so the answer comes on its connection.
	waitRequestRead(t, cfg.RuntimeDir)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ex := <-waited
	if ex.Code != 0 || ex.Reason != container.ReasonPoweroff {
		t.Fatalf("exit after SIGTERM: %v", ex)
	}
	testenv.Eventually(t, 2*time.Second, func() error {
		if st.SupervisorAlive() {
			return errors.New("supervisor still alive")
		}
		return nil
	})
	log, _ := os.ReadFile(cfg.ConsoleLog)
	// SIGRTMIN+3 is systemd's halt: it says so.
	for _, want := range []string{"Stopped", "Sending SIGTERM to remaining processes", "Halting system."} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("console log lacks %q (an orderly shutdown):\n%s", want, testenv.Tail(log, 3000))
		}
	}
	if l := leaks(t, cfg); len(l) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
	}
	// A second wait after the supervisor is gone reads state.json.
	if ex2, err := c.Wait(ctx); err != nil || ex2 != ex {
		t.Errorf("wait after exit: %v, %v", ex2, err)
	}
}

// TestSpawnDetachedFails checks that a supervisor that cannot start the
// machine reports why.
func TestSpawnDetachedFails(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	cfg := newConfig(t, "fail")
	cfg.Boot = true
	cfg.Root.Dir = t.TempDir() // an empty tree: no init
	_, err := container.SpawnDetached(context.Background(), cfg, "test-supervise")
	if err == nil || !strings.Contains(err.Error(), "no init found") {
		t.Fatalf("want a 'no init found' error, got %v", err)
	}
	if l := leaks(t, cfg); len(l) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
	}
	if _, err := container.SpawnDetached(context.Background(), cfg, "no-such-stage"); err == nil {
		t.Error("unknown stage accepted")
	}
}

// TestBusybox boots a busybox-init guest and halts it.
func TestBusybox(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	cfg := newConfig(t, "bb")
	cfg.Boot = true
	cfg.Root = container.Root{Dir: testenv.BusyboxGuest(t), ReadOnly: true}
	cfg.Hostname = "bb-host"
	testenv.RequireCommand(t, "nsenter", "ip")
	// The Network hook runs with the payload in its network namespace and
	// before init: what it adds is there when the guest starts.
	var hookPID int
	hooks := container.Hooks{Network: func(ctx context.Context, pid int) error {
		hookPID = pid
		out, err := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(pid), "-n", "ip", "link", "add", "hook0", "type", "veth", "peer", "name", "hook1").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}}
	m := startHooks(t, cfg, hooks)
	st := m.WaitPhase(t, container.PhaseRunning, 1)
	if st.Init != "busybox" {
		t.Errorf("init kind %q", st.Init)
	}
	if hookPID != st.LeaderPID {
		t.Errorf("network hook got PID %d, leader is %d", hookPID, st.LeaderPID)
	}
	out, code := m.sh(t, "hostname; cat /proc/1/comm; ip -o link show hook0 | cut -d: -f2 | cut -d@ -f1; touch /x 2>&1")
	if code == 0 || !strings.Contains(out, "bb-host\ninit\n hook0\n") || !strings.Contains(out, "Read-only") {
		t.Errorf("inside (exit %d):\n%s", code, out)
	}
	c, conn := attachWriter(t, cfg.RuntimeDir)
	defer conn.Close()
	// One writer at a time: a second client only reads.
	conn2, writing2, err := c.Attach(context.Background(), true)
	if err != nil || writing2 {
		t.Fatalf("second attach: %v (writing %v)", err, writing2)
	}
	conn2.Close()
	if err := c.Poweroff(context.Background()); err != nil {
		t.Fatal(err)
	}
	ex, _ := m.Wait(t)
	if ex.Code != 0 || ex.Reason != container.ReasonPoweroff {
		t.Fatalf("exit: %v", ex)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if !strings.Contains(seen.String(), "berth-busybox-shutdown") {
		t.Errorf("attached console did not see the shutdown: %q", seen.String())
	}
	log, _ := os.ReadFile(cfg.ConsoleLog)
	if !bytes.Contains(log, []byte("berth-busybox-booted")) || !bytes.Contains(log, []byte("berth-busybox-shutdown")) {
		t.Errorf("console log:\n%s", log)
	}
	if l := leaks(t, cfg); len(l) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
	}
}

// TestApplication runs commands in application mode: exit codes, the reaper
// forwarding SIGTERM, a passthrough console.
func TestApplication(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root := testenv.BusyboxGuest(t)
	for _, tc := range []struct {
		name    string
		args    []string
		console string
		code    int
		reason  string
		log     string
	}{
		{"exit code", []string{"/bin/sh", "-c", "echo out-$((6*7)); exit 7"}, "pty", 7, container.ReasonExited, "out-42"},
		{"killed by a signal", []string{"/bin/sh", "-c", "kill -KILL $$"}, "pty", 137, container.ReasonExited, ""},
		{"passthrough", []string{"/bin/sh", "-c", "exit 0"}, "passthrough", 0, container.ReasonExited, ""},
		{"not found", []string{"/no/such"}, "pty", 1, container.ReasonFailed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := newConfig(t, "app")
			cfg.Root = container.Root{Dir: root, ReadOnly: true}
			cfg.Args, cfg.Console = tc.args, tc.console
			ex, err := container.Supervise(context.Background(), cfg, container.Hooks{})
			if ex.Code != tc.code || ex.Reason != tc.reason {
				t.Errorf("exit %v (err %v), want code %d reason %s", ex, err, tc.code, tc.reason)
			}
			if tc.reason == container.ReasonFailed && (err == nil || !strings.Contains(err.Error(), "/no/such")) {
				t.Errorf("error should name the command: %v", err)
			}
			log, _ := os.ReadFile(cfg.ConsoleLog)
			if !bytes.Contains(log, []byte(tc.log)) {
				t.Errorf("console log %q lacks %q", log, tc.log)
			}
			if l := leaks(t, cfg); len(l) > 0 {
				t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
			}
		})
	}
	t.Run("hooks on failure", func(t *testing.T) {
		cfg := newConfig(t, "app")
		cfg.Root = container.Root{Dir: root, ReadOnly: true}
		cfg.Args = []string{"/bin/true"}
		stopped := 0
		var got container.ExitStatus
		ex, err := container.Supervise(context.Background(), cfg, container.Hooks{
			Started: func(context.Context, container.Started) error { return errors.New("registration refused") },
			Stopped: func(_ context.Context, st container.ExitStatus) { stopped++; got = st },
		})
		if err == nil || !strings.Contains(err.Error(), "registration refused") || ex.Reason != container.ReasonFailed {
			t.Errorf("started hook failure: %v, %v", ex, err)
		}
		if stopped != 1 || got != ex {
			t.Errorf("stopped hook ran %d times with %v", stopped, got)
		}
		if l := leaks(t, cfg); len(l) > 0 {
			t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
		}
	})
	t.Run("stop timeout kills", func(t *testing.T) {
		cfg := newConfig(t, "app")
		cfg.Root = container.Root{Dir: root, ReadOnly: true}
		cfg.Args = []string{"/bin/sh", "-c", "trap '' TERM; echo armed; while :; do sleep 0.1; done"}
		cfg.StopTimeout = 500 * time.Millisecond
		m := start(t, cfg)
		m.WaitPhase(t, container.PhaseRunning, 1)
		waitConsole(t, cfg, "armed")
		c, err := container.Dial(cfg.RuntimeDir)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := c.Terminate(context.Background()); err != nil {
			t.Fatal(err)
		}
		ex, _ := m.Wait(t)
		if ex.Code != 137 || ex.Reason != container.ReasonKilled || time.Since(t0) < cfg.StopTimeout {
			t.Errorf("exit %v after %v", ex, time.Since(t0))
		}
		if l := leaks(t, cfg); len(l) > 0 {
			t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
		}
	})
	// A signal berth sends on request that ends PID 1 is a kill, not a crash
	// (machined terminates with SIGKILL to "all").
	for _, whom := range []string{"all", "leader"} {
		t.Run("kill "+whom, func(t *testing.T) {
			cfg := newConfig(t, "app")
			cfg.Root = container.Root{Dir: root, ReadOnly: true}
			cfg.Args = []string{"/bin/sh", "-c", "sleep 100 & wait"}
			m := start(t, cfg)
			m.WaitPhase(t, container.PhaseRunning, 1)
			c, _ := container.Dial(cfg.RuntimeDir)
			if err := c.Kill(context.Background(), syscall.SIGKILL, "everyone"); err == nil {
				t.Error("whom \"everyone\" accepted")
			}
			if err := c.Kill(context.Background(), syscall.SIGKILL, whom); err != nil {
				t.Fatal(err)
			}
			if ex, _ := m.Wait(t); ex.Code != 137 || ex.Reason != container.ReasonKilled {
				t.Errorf("exit %v, want 137 %s", ex, container.ReasonKilled)
			}
		})
	}
	t.Run("poweroff reaches the command", func(t *testing.T) {
		cfg := newConfig(t, "app")
		cfg.Root = container.Root{Dir: root, ReadOnly: true}
		cfg.Args = []string{"/bin/sh", "-c", "trap 'echo got-term; exit 9' TERM; echo armed; while :; do sleep 0.1; done"}
		m := start(t, cfg)
		m.WaitPhase(t, container.PhaseRunning, 1)
		waitConsole(t, cfg, "armed")
		c, err := container.Dial(cfg.RuntimeDir)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Terminate(context.Background()); err != nil {
			t.Fatal(err)
		}
		if ex, _ := m.Wait(t); ex.Code != 9 {
			t.Errorf("exit %v, want 9 from the trap", ex)
		}
	})
}

// TestReadOnlyBindSubmount: a read-only bind mount is read-only all through,
// a filesystem mounted inside its source included, and keeps that
// filesystem's nosuid and nodev.
func TestReadOnlyBindSubmount(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	src := t.TempDir()
	sub := filepath.Join(src, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sub, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(sub, unix.MNT_DETACH) })
	cfg := newConfig(t, "robind")
	cfg.Root = container.Root{Dir: testenv.BusyboxGuest(t), ReadOnly: true}
	cfg.Mounts = []container.Mount{{Type: "bind", Source: src, Target: "/data", ReadOnly: true}}
	cfg.Args = []string{"/bin/sh", "-c", `touch /data/x 2>/dev/null && echo top-writable
		touch /data/sub/x 2>/dev/null && echo sub-writable
		grep " /data/sub " /proc/self/mountinfo`}
	ex, err := container.Supervise(context.Background(), cfg, container.Hooks{})
	log, _ := os.ReadFile(cfg.ConsoleLog)
	if err != nil || ex.Code != 0 {
		t.Fatalf("exit %v, %v:\n%s", ex, err, log)
	}
	if bytes.Contains(log, []byte("writable")) || !bytes.Contains(log, []byte(" ro,nosuid,nodev")) {
		t.Errorf("inside:\n%s", log)
	}
	if err := os.WriteFile(filepath.Join(sub, "y"), nil, 0o644); err != nil {
		t.Errorf("the source's submount on the host: %v", err)
	}
}

// TestInheritableCapsCleared: capabilities inheritable or ambient in the
// process that starts the machine do not reach the guest; without clearing,
// a root exec would get every inheritable capability back in its permitted
// set, bounding set or not.
func TestInheritableCapsCleared(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	cfg := newConfig(t, "caps")
	cfg.Root = container.Root{Dir: testenv.BusyboxGuest(t), ReadOnly: true}
	cfg.Args = []string{"/bin/grep", "^Cap", "/proc/self/status"}
	type result struct {
		ex  container.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: this thread's capabilities are changed, so it ends
		// with the goroutine. The payload is forked from it.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- result{err: err}
			return
		}
		data[0].Inheritable |= 1 << unix.CAP_SYS_MODULE
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- result{err: err}
			return
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, unix.CAP_SYS_MODULE, 0, 0); err != nil {
			done <- result{err: err}
			return
		}
		ex, err := container.Supervise(context.Background(), cfg, container.Hooks{})
		done <- result{ex, err}
	}()
	r := <-done
	log, _ := os.ReadFile(cfg.ConsoleLog)
	if r.err != nil || r.ex.Code != 0 {
		t.Fatalf("exit %v, %v:\n%s", r.ex, r.err, log)
	}
	caps := map[string]string{}
	for _, l := range strings.Split(string(log), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			caps[k] = strings.TrimSpace(v)
		}
	}
	if caps["CapInh"] != "0000000000000000" || caps["CapAmb"] != "0000000000000000" || caps["CapPrm"] == "" || caps["CapPrm"] != caps["CapBnd"] {
		t.Errorf("capabilities inside:\n%s", log)
	}
}

// TestCycles boots and powers off a machine ten times and checks nothing is
// left behind.
func TestCycles(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	lower := testenv.DebianGuest(t)
	base := newConfig(t, "cyc")
	base.Boot = true
	overlayRoot(t, &base, lower)
	// An empty /etc/machine-id is seeded from the machine's UUID (by the
	// guest's systemd, from $container_uuid), the same at every boot.
	if err := os.MkdirAll(filepath.Join(base.Root.Overlay.Upper, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	// (Debian's /var/lib/dbus/machine-id would be taken first: empty it too.)
	for _, f := range []string{"etc/machine-id", "var/lib/dbus/machine-id"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(base.Root.Overlay.Upper, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(base.Root.Overlay.Upper, f), nil, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	ptys := ptyCount(t)
	for i := 0; i < 10; i++ {
		m := start(t, base)
		m.WaitPhase(t, container.PhaseRunning, 1)
		if i == 0 || i == 9 {
			if out, _ := m.sh(t, "cat /etc/machine-id"); strings.TrimSpace(out) != base.UUID {
				t.Errorf("boot %d: /etc/machine-id %q, want the machine's UUID %s", i, out, base.UUID)
			}
		}
		c, err := container.Dial(base.RuntimeDir)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Poweroff(context.Background()); err != nil {
			t.Fatal(err)
		}
		if ex, _ := m.Wait(t); ex.Code != 0 {
			t.Fatalf("cycle %d: %v", i, ex)
		}
		if l := leaks(t, base); len(l) > 0 {
			t.Fatalf("cycle %d left behind:\n%s", i, strings.Join(l, "\n"))
		}
	}
	if n := ptysSettle(t, ptys); n > ptys {
		t.Errorf("ptys held by the supervisor: %d before, %d after ten cycles", ptys, n)
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, f := range fds {
			l, _ := os.Readlink("/proc/self/fd/" + f.Name())
			t.Logf("fd %s -> %s", f.Name(), l)
		}
	}
	if ents, _ := os.ReadDir(base.RuntimeDir); len(ents) > 2 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("runtime dir holds %v", names)
	}
}

// attachWriter attaches to a running machine's console as its writer.
func attachWriter(t *testing.T, dir string) (*container.Client, net.Conn) {
	t.Helper()
	c, err := container.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	conn, writing, err := c.Attach(context.Background(), true)
	if err != nil || !writing {
		t.Fatalf("attach: %v (writing %v)", err, writing)
	}
	return c, conn
}
