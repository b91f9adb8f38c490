package container_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
	"golang.org/x/sys/unix"
)

func init() {
	// probe runs inside a machine (the test binary is bound in) and reports
	// what the guest may and may not do, one "name: result" per line.
	container.RegisterStage("probe", probe)
}

func probe() {
	res := func(name string, err error) {
		if err == nil {
			fmt.Printf("%s: ok\n", name)
		} else {
			fmt.Printf("%s: %v\n", name, err)
		}
	}
	switch os.Args[1] {
	case "isolation":
		res("init_module", unix.InitModule(nil, ""))
		res("finit_module", unix.FinitModule(0, "", 0))
		res("mknod-block", unix.Mknod("/tmp/probe-blk", unix.S_IFBLK|0o600, int(unix.Mkdev(254, 0))))
		res("mknod-char-null", unix.Mknod("/tmp/probe-null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		_ = os.Remove("/tmp/probe-null")
		res("write-proc-sys", os.WriteFile("/proc/sys/kernel/hostname", []byte("evil"), 0))
		res("write-sys", os.WriteFile("/sys/kernel/uevent_helper", []byte("/evil"), 0))
		res("mount-host-root", unix.Mount("/dev/vda", "/mnt", "ext4", 0, ""))
		res("sysrq", os.WriteFile("/proc/sysrq-trigger", []byte("h"), 0))
		res("settime", unix.ClockSettime(unix.CLOCK_REALTIME, &unix.Timespec{Sec: 1}))
	case "tun":
		// A tun link in the machine's network namespace, gone with the fd.
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			ifr, _ := unix.NewIfreq("probe%d")
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
			unix.Close(fd)
		} else {
			err = &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err}
		}
		res("tun", err)
	case "inotify":
		// Takes every inotify instance the kernel grants, says how many in
		// the file os.Args[2], and holds them until that file is removed
		// (at most 30 s).
		var fds []int
		for {
			fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
			if err != nil {
				_ = os.WriteFile(os.Args[2], fmt.Appendf(nil, "inotify: %d instances, then %v\n", len(fds), err), 0o644)
				break
			}
			fds = append(fds, fd)
		}
		for i := 0; i < 300; i++ {
			if _, err := os.Stat(os.Args[2]); err != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		fmt.Println("released")
	case "alloc":
		n, _ := strconv.Atoi(os.Args[2])
		var keep [][]byte
		for i := 0; i < n; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println("allocated", len(keep), "MiB")
	}
}

// machine is a test machine (package machinetest's) with a shell.
type machine struct{ *machinetest.Machine }

// newConfig returns a config for root with unique name, runtime dir and console
// log under t.TempDir().
func newConfig(t testing.TB, prefix string) container.Config {
	t.Helper()
	tmp := t.TempDir()
	name := testenv.UniqueName(prefix)
	// Keep the runtime dir short: it holds unix sockets (108-byte limit).
	run, err := os.MkdirTemp("/run", "berth-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	return container.Config{
		Name:        name,
		UUID:        strings.Repeat("ab", 12) + fmt.Sprintf("%08x", time.Now().UnixNano()&0xffffffff),
		RuntimeDir:  run,
		ConsoleLog:  filepath.Join(tmp, "console.log"),
		StopTimeout: 20 * time.Second,
	}
}

// overlayRoot gives cfg an overlay root over the cached Debian guest (nothing
// is copied; the cache stays untouched).
func overlayRoot(t *testing.T, cfg *container.Config, lower string) {
	t.Helper()
	tmp := t.TempDir()
	for _, d := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Root = container.Root{Overlay: &container.Overlay{Lower: []string{lower}, Upper: filepath.Join(tmp, "upper"), Work: filepath.Join(tmp, "work")}}
}

// start supervises cfg in this process; the machine is killed, if need be,
// when the test ends.
func start(t *testing.T, cfg container.Config) *machine {
	t.Helper()
	return startHooks(t, cfg, container.Hooks{})
}

func startHooks(t *testing.T, cfg container.Config, hooks container.Hooks) *machine {
	t.Helper()
	return &machine{machinetest.Start(t, cfg, hooks)}
}

// sh runs a shell command in the machine and returns its combined output and
// exit code.
func (m *machine) sh(t *testing.T, script string, env ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code, err := container.Enter(ctx, m.Config.RuntimeDir, container.EnterOptions{
		Command: []string{"/bin/sh", "-c", script}, Env: env, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("enter %s: %v", m.Config.Name, err)
	}
	return out.String(), code
}

// leaks lists what a machine may leave behind on the host: its cgroup in any
// hierarchy, processes in it, mounts that mention its runtime dir or root,
// its propagation directory.
func leaks(t *testing.T, cfg container.Config) []string {
	t.Helper()
	var out []string
	for _, d := range testenv.CgroupDirs(t, "/berth/"+cfg.Name) {
		if _, err := os.Stat(d); err == nil {
			out = append(out, "cgroup "+d)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		// The payload mounts its root on RuntimeDir/root and binds the notify
		// socket from RuntimeDir: any mount point there, or any overlay of the
		// machine's upper directory, would be a leak on the host.
		f := strings.Fields(l)
		if len(f) > 4 && (strings.HasPrefix(f[4], cfg.RuntimeDir) ||
			(cfg.Root.Overlay != nil && strings.Contains(l, "upperdir="+cfg.Root.Overlay.Upper))) {
			out = append(out, "mount "+l)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte("/berth/"+cfg.Name+"/")) || bytes.HasSuffix(bytes.TrimSpace(b), []byte("/berth/"+cfg.Name)) {
			out = append(out, "process "+p)
		}
	}
	if _, err := os.Lstat(rundir.Propagate(cfg.Name)); err == nil {
		out = append(out, "propagation directory "+rundir.Propagate(cfg.Name))
	}
	for _, f := range []string{"control.sock", "notify", "root"} {
		if _, err := os.Lstat(filepath.Join(cfg.RuntimeDir, f)); err == nil {
			out = append(out, "file "+filepath.Join(cfg.RuntimeDir, f))
		}
	}
	return out
}

// ptyCount counts the ptys this process holds (masters and slaves, of any
// devpts instance): a leaked console or Enter pty shows up here. The host's
// global count (/proc/sys/kernel/pty/nr) is no measure: other tests on the
// machine open ptys at the same time.
func ptyCount(t *testing.T) int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range fds {
		l, _ := os.Readlink("/proc/self/fd/" + f.Name())
		if strings.HasSuffix(l, "/ptmx") || strings.Contains(l, "/pts/") || strings.HasSuffix(l, "/console") {
			n++
		}
	}
	return n
}

// ptysSettle waits up to five seconds for this process's pty count to drop
// to want (a console pump may still be closing its master) and returns it.
func ptysSettle(t *testing.T, want int) int {
	n := ptyCount(t)
	_ = testenv.Poll(5*time.Second, func() error {
		if n = ptyCount(t); n > want {
			return errors.New("ptys still open")
		}
		return nil
	})
	return n
}

// waitConsole waits until the machine's console log shows text (a guest
// saying it is ready for what the test does next).
func waitConsole(t *testing.T, cfg container.Config, text string) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() error {
		if b, _ := os.ReadFile(cfg.ConsoleLog); !bytes.Contains(b, []byte(text)) {
			return fmt.Errorf("machine %s: %q has not appeared on the console", cfg.Name, text)
		}
		return nil
	})
}

// waitRequestRead waits until a request this process sent on runDir's
// control socket has been read by the supervisor: the goroutine in
// Client.Wait has sent it (it decodes the answer), and the supervisor's end
// of this process's connection has nothing left to read (its Recv-Q in
// `ss -x`). The test must hold no other connection to that socket.
func waitRequestRead(t *testing.T, runDir string) {
	t.Helper()
	testenv.RequireCommand(t, "ss")
	sock := filepath.Join(runDir, "control.sock")
	testenv.Eventually(t, 10*time.Second, func() error {
		if !goroutineIn("container.(*Client).Wait(", "json.(*Decoder).Decode(") {
			return errors.New("Client.Wait has not sent its request")
		}
		out, err := exec.Command("ss", "-H", "-x", "-n").CombinedOutput()
		if err != nil {
			return testenv.Stop(fmt.Errorf("ss -x: %v: %s", err, out))
		}
		mine := socketInodes(t)
		// Netid State Recv-Q Send-Q Local Port Peer Port: the kernel names
		// the supervisor's end of a connection after the listening socket.
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) != 8 || f[4] != sock || !mine[f[7]] {
				continue
			}
			if f[2] != "0" {
				return fmt.Errorf("the supervisor has %s bytes of the request to read", f[2])
			}
			return nil
		}
		return errors.New("the supervisor has not accepted the connection")
	})
}

// goroutineIn reports whether a goroutine of this process is in all of the
// functions (as its stack trace names them).
func goroutineIn(funcs ...string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		all := true
		for _, f := range funcs {
			all = all && strings.Contains(g, f)
		}
		if all {
			return true
		}
	}
	return false
}

// socketInodes are the inodes of the sockets this process holds.
func socketInodes(t *testing.T) map[string]bool {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range fds {
		l, _ := os.Readlink("/proc/self/fd/" + f.Name())
		if n, ok := strings.CutPrefix(l, "socket:["); ok {
			out[strings.TrimSuffix(n, "]")] = true
		}
	}
	return out
}
