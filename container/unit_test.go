package container

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthd/berth/internal/testenv"
)

func TestParseCgroupMount(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
		want hierarchy
	}{
		{"35 26 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate", true,
			hierarchy{Mount: "/sys/fs/cgroup/unified", Unified: true}},
		{"36 26 0:31 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd", true,
			hierarchy{Mount: "/sys/fs/cgroup/systemd", Controllers: []string{"name=systemd"}}},
		{"40 26 0:35 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct", true,
			hierarchy{Mount: "/sys/fs/cgroup/cpu,cpuacct", Controllers: []string{"cpu", "cpuacct"}}},
		{"41 26 0:36 /sub /mnt/x rw shared:15 - cgroup cgroup rw,memory", false, hierarchy{}}, // not the root of the hierarchy
		{"42 26 0:37 / /mnt/with\\040space rw - cgroup2 cgroup2 rw", true, hierarchy{Mount: "/mnt/with space", Unified: true}},
		{"43 26 8:1 / / rw - ext4 /dev/sda1 rw", false, hierarchy{}},
	} {
		h, _, ok := parseCgroupMount(tc.line)
		if ok != tc.ok || h.Mount != tc.want.Mount || h.Unified != tc.want.Unified || strings.Join(h.Controllers, ",") != strings.Join(tc.want.Controllers, ",") {
			t.Errorf("%q: got %+v %v, want %+v %v", tc.line, h, ok, tc.want, tc.ok)
		}
	}
}

func TestCapMask(t *testing.T) {
	def, err := capMask(nil, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	has := func(m uint64, c int) bool { return m&(1<<uint(c)) != 0 }
	if !has(def, unix.CAP_SYS_ADMIN) || !has(def, unix.CAP_MKNOD) || has(def, unix.CAP_SYS_MODULE) || has(def, unix.CAP_NET_ADMIN) || has(def, unix.CAP_SYS_TIME) {
		t.Errorf("default set %x", def)
	}
	priv, _ := capMask(nil, nil, true)
	if !has(priv, unix.CAP_NET_ADMIN) {
		t.Error("a private network should keep CAP_NET_ADMIN")
	}
	m, err := capMask([]string{"CAP_SYS_TIME", "sys_rawio"}, []string{"cap_mknod"}, false)
	if err != nil || !has(m, unix.CAP_SYS_TIME) || !has(m, unix.CAP_SYS_RAWIO) || has(m, unix.CAP_MKNOD) {
		t.Errorf("add/drop: %x %v", m, err)
	}
	all, _ := capMask([]string{"all"}, nil, false)
	if !has(all, unix.CAP_SYS_MODULE) {
		t.Error("all")
	}
	if _, err := capMask([]string{"CAP_FLY"}, nil, false); err == nil || !strings.Contains(err.Error(), "CAP_FLY") {
		t.Errorf("unknown capability: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	dir := t.TempDir()
	good := Config{Name: "web", UUID: "0123456789ABCDEF0123456789abcdef", Root: Root{Dir: dir}, Boot: true, RuntimeDir: "/run/berth/machines/web"}
	if c, err := good.withDefaults(); err != nil || c.Hostname != "web" || c.NetworkMode != "private" || c.Console != "pty" ||
		c.UUID != "0123456789abcdef0123456789abcdef" || c.StopTimeout != 30*time.Second || c.ConsoleLog != "/var/log/berth/web.console.log" {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"bad name", func(c *Config) { c.Name = "-x" }, "name:"},
		{"bad uuid", func(c *Config) { c.UUID = "xyz" }, "uuid:"},
		{"zero uuid", func(c *Config) { c.UUID = strings.Repeat("0", 32) }, "not all zero"},
		{"no root", func(c *Config) { c.Root = Root{} }, "root: a directory or an overlay"},
		{"both roots", func(c *Config) { c.Root.Overlay = &Overlay{} }, "not both"},
		{"relative root", func(c *Config) { c.Root.Dir = "rel" }, "absolute"},
		{"missing root", func(c *Config) { c.Root.Dir = "/nonexistent/x" }, "not a directory"},
		{"overlay incomplete", func(c *Config) { c.Root = Root{Overlay: &Overlay{Lower: []string{"/a"}}} }, "lower, upper and work"},
		{"app without command", func(c *Config) { c.Boot = false }, "needs a command"},
		{"relative command", func(c *Config) { c.Boot, c.Args = false, []string{"sh"} }, "absolute path inside"},
		{"network", func(c *Config) { c.NetworkMode = "bridge" }, "networkMode"},
		{"users at 0", func(c *Config) { c.Users = &Users{Base: 0} }, "users: base 0"},
		{"users past the end", func(c *Config) { c.Users = &Users{Base: 0xFFFF0000, Size: 0x10000} }, "ends before 4294967295"},
		{"passthrough boot", func(c *Config) { c.Console = "passthrough" }, "only for application mode"},
		{"mount type", func(c *Config) { c.Mounts = []Mount{{Type: "nfs", Target: "/x"}} }, "mounts[0].type"},
		{"mount target", func(c *Config) { c.Mounts = []Mount{{Type: "tmpfs", Target: "/"}} }, "mounts[0].target"},
		{"bind source", func(c *Config) { c.Mounts = []Mount{{Type: "bind", Source: "/nonexistent", Target: "/x"}} }, "mounts[0].source"},
		{"capability", func(c *Config) { c.CapAdd = []string{"bogus"} }, "capAdd"},
		{"runtime dir", func(c *Config) { c.RuntimeDir = "" }, "runtimeDir"},
		{"long runtime dir", func(c *Config) { c.RuntimeDir = "/" + strings.Repeat("x", 100) }, "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			_, err := c.withDefaults()
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}

func TestEscapeReader(t *testing.T) {
	for in, want := range map[string]struct {
		out   string
		fired int
	}{
		"ab\x1d\x1d\x1dcd": {"abcd", 1},
		"\x1d\x1dx":        {"\x1d\x1dx", 0}, // two presses reach the guest
		"\x1d":             {"\x1d", 0},
		"a\x1db":           {"a\x1db", 0},
		"\x1d\x1d\x1d\x1d": {"\x1d", 1}, // the fourth starts again
	} {
		fired := 0
		b, err := io.ReadAll(&EscapeReader{R: strings.NewReader(in), OnEscape: func() { fired++ }})
		if err != nil || string(b) != want.out || fired != want.fired {
			t.Errorf("%q: got %q, fired %d, %v; want %q, fired %d", in, b, fired, err, want.out, want.fired)
		}
	}

	// A lone Ctrl-] reaches the guest once the window has passed, with no
	// more input coming.
	pr, pw := io.Pipe()
	defer pw.Close()
	e := &EscapeReader{R: pr, window: 50 * time.Millisecond}
	go pw.Write([]byte{0x1d})
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 8)
		n, _ := e.Read(b)
		got <- b[:n]
	}()
	select {
	case b := <-got:
		if string(b) != "\x1d" {
			t.Errorf("lone Ctrl-]: read %q", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a lone Ctrl-] was held back for good")
	}

	// Three presses spread wider than the window are no escape.
	pr, pw = io.Pipe()
	fired := 0
	e = &EscapeReader{R: pr, OnEscape: func() { fired++ }, window: 50 * time.Millisecond}
	go func() {
		pw.Write([]byte{0x1d})
		time.Sleep(150 * time.Millisecond)
		pw.Write([]byte{0x1d, 0x1d})
		pw.Close()
	}()
	if b, _ := io.ReadAll(e); string(b) != "\x1d\x1d\x1d" || fired != 0 {
		t.Errorf("slow presses: got %q, fired %d", b, fired)
	}
}

// gatedWriter blocks every Write until gate is closed (a paused pager).
type gatedWriter struct {
	gate chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	<-w.gate
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *gatedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestConsoleSlowReaders: a stalled terminal and a client that reads nothing,
// not even its hello, hold up neither the pump nor the log; the terminal gets
// what it fell behind on cut, with a note, and then the console again.
func TestConsoleSlowReaders(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "console.log")
	clog, err := openConsoleLog(logPath, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	term := &gatedWriter{gate: make(chan struct{})}
	h := newConsoleHub(clog, term, nil)
	srv, cli := net.Pipe()
	defer cli.Close()
	greeting := make(chan struct{})
	go h.attach(srv, true, func(bool) {
		close(greeting)
		_, _ = srv.Write([]byte("hello\n")) // blocks: the client does not read
	})
	<-greeting

	chunk := bytes.Repeat([]byte("x"), 16<<10)
	total := 3 * consoleQueueMax
	pumped := make(chan struct{})
	go func() {
		for sent := 0; sent < total; sent += len(chunk) {
			h.broadcast(chunk)
		}
		close(pumped)
	}()
	select {
	case <-pumped:
	case <-time.After(5 * time.Second):
		close(term.gate)
		t.Fatal("stalled readers hold up the console pump")
	}
	if st, err := os.Stat(logPath); err != nil || st.Size() != int64(total) {
		t.Errorf("console log: %v, %v; want all %d bytes", st, err, total)
	}

	close(term.gate)
	waitFor := func(s string) {
		_ = testenv.Poll(2*time.Second, func() error {
			if !strings.HasSuffix(term.String(), s) {
				return errors.New("not yet")
			}
			return nil
		})
	}
	waitFor("fell behind]\r\n")
	h.broadcast([]byte("after"))
	waitFor("after")
	out := term.String()
	xs := strings.Count(out, "x")
	if !strings.HasSuffix(out, "after") || !strings.Contains(out, "console output dropped") || xs == 0 || xs > 2*consoleQueueMax {
		t.Errorf("terminal got %d x, then %q", xs, strings.TrimLeft(out, "x"))
	}
	h.close()
}

// TestReadOnlyRec: a read-only bind of a directory with a filesystem mounted
// inside it is read-only all through, by mount_setattr and by the fallback of
// one remount per mount, which keeps each mount's other flags.
func TestReadOnlyRec(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	for _, d := range []string{"src/sub", "setattr", "each"} {
		if err := os.MkdirAll(filepath.Join(tmp, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, with its own mount namespace, ends with
		// the goroutine, and every mount with it.
		runtime.LockOSThread()
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return err
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return err
			}
			if err := unix.Mount("tmpfs", filepath.Join(src, "sub"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m"); err != nil {
				return err
			}
			for name, ro := range map[string]func(string) error{"setattr": readOnlyRec, "each": readOnlyEach} {
				dst := filepath.Join(tmp, name)
				if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
					return err
				}
				if err := ro(dst); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				for _, f := range []string{"x", "sub/x"} {
					if err := os.WriteFile(filepath.Join(dst, f), nil, 0o644); !errors.Is(err, unix.EROFS) {
						return fmt.Errorf("%s: writing %s: %v, want EROFS", name, f, err)
					}
				}
				var st unix.Statfs_t
				if err := unix.Statfs(filepath.Join(dst, "sub"), &st); err != nil {
					return err
				}
				if want := int64(unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV); int64(st.Flags)&want != want {
					return fmt.Errorf("%s: flags of the submount %#x, want rdonly, nosuid, nodev", name, st.Flags)
				}
			}
			// The source stays writable.
			return os.WriteFile(filepath.Join(src, "sub/y"), nil, 0o644)
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestConsoleLogRotates(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.console.log")
	l, err := openConsoleLog(p, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 25; i++ {
		l.Write([]byte("0123456789"))
	}
	l.Close()
	cur, _ := os.ReadFile(p)
	old, _ := os.ReadFile(p + ".1")
	if len(cur) > 100 || len(old) == 0 || len(old) > 100 || !bytes.HasPrefix(cur, []byte("0123456789")) {
		t.Errorf("current %d bytes, rotated %d bytes", len(cur), len(old))
	}
}

// TestNotifyOwnManager: the guest's READY=1 reaches the supervisor's own
// $NOTIFY_SOCKET, an abstract one ("@name") too, and the variable stays set.
func TestNotifyOwnManager(t *testing.T) {
	name, next := testenv.NotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", name)
	notifyOwnManager("READY=1")
	if got := next(); got != "READY=1" {
		t.Errorf("got %q", got)
	}
	if os.Getenv("NOTIFY_SOCKET") != name {
		t.Error("NOTIFY_SOCKET was taken out of the supervisor's environment")
	}
	t.Setenv("NOTIFY_SOCKET", "")
	notifyOwnManager("READY=1") // no manager: nothing to do, nothing to fail
}

func TestProcessStartTime(t *testing.T) {
	a, err := ProcessStartTime(os.Getpid())
	if err != nil || a == 0 {
		t.Fatalf("%d %v", a, err)
	}
	st := State{SupervisorPID: os.Getpid(), SupervisorStart: a}
	if !st.SupervisorAlive() {
		t.Error("own process not alive")
	}
	st.SupervisorStart++
	if st.SupervisorAlive() {
		t.Error("a different start time must not count as alive (PID reuse)")
	}
}

func TestDashedUUID(t *testing.T) {
	if got := dashedUUID("0123456789abcdef0123456789abcdef"); got != "01234567-89ab-cdef-0123-456789abcdef" {
		t.Error(got)
	}
}

func TestInitTakes(t *testing.T) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, unix.SIGUSR2)
	defer signal.Stop(c)
	if !initTakes(os.Getpid(), unix.SIGUSR2) {
		t.Error("a caught signal is not seen as taken")
	}
	sleep := exec.Command("sleep", "10")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleep.Process.Kill(); _ = sleep.Wait() }()
	if initTakes(sleep.Process.Pid, unix.SIGUSR2) {
		t.Error("a signal sleep neither handles nor blocks is seen as taken")
	}
}
