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
	"slices"
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
	if n, err := CanonicalCapability("net_Admin"); n != "CAP_NET_ADMIN" || err != nil {
		t.Errorf("CanonicalCapability: %q, %v", n, err)
	}
	if _, err := CanonicalCapability("all"); err == nil {
		t.Error("CanonicalCapability accepts all")
	}
	host, own := DefaultCapabilities(false), DefaultCapabilities(true)
	if len(own) != len(host)+1 || !slices.Contains(own, "CAP_NET_ADMIN") || slices.Contains(host, "CAP_NET_ADMIN") || !slices.IsSorted(host) {
		t.Errorf("DefaultCapabilities: %q, %q", host, own)
	}
	if m, _ := capMask(host, nil, false); m != def {
		t.Errorf("DefaultCapabilities(false) as capAdd: %x, want %x", m, def)
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
		{"overlay incomplete", func(c *Config) { c.Root = Root{Overlay: &Overlay{Lower: []string{"/a"}}} }, "upper and work (or scratch)"},
		{"overlay scratch and upper", func(c *Config) {
			c.Root = Root{Overlay: &Overlay{Lower: []string{"/a"}, Upper: "/u", Work: "/w", Scratch: 1 << 20}}
		}, "either scratch or upper and work"},
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
		{"user when booting", func(c *Config) { c.User = &User{UID: 1} }, "user: only for application mode"},
		{"user outside the range", func(c *Config) {
			c.Boot, c.Args, c.Users, c.User = false, []string{"/bin/sh"}, &Users{Base: 1 << 20}, &User{UID: 1000, GID: 65536}
		}, "user.gid 65536: the machine's user namespace has the IDs 0…65535 only"},
		{"group outside the range", func(c *Config) {
			c.Boot, c.Args, c.Users, c.User = false, []string{"/bin/sh"}, &Users{Base: 1 << 20}, &User{Groups: []uint32{5, 70000}}
		}, "user.groups[1] 70000"},
		{"user -1", func(c *Config) { c.Boot, c.Args, c.User = false, []string{"/bin/sh"}, &User{UID: 1<<32 - 1} }, "user.uid: 4294967295 is no ID"},
		{"ambient when booting", func(c *Config) { c.AmbientCaps = []string{"CAP_KILL"} }, "ambientCaps: only for application mode"},
		{"ambient unknown", func(c *Config) { c.Boot, c.Args, c.AmbientCaps = false, []string{"/bin/sh"}, []string{"CAP_BOGUS"} }, "ambientCaps[0]: unknown capability"},
		{"ambient outside the bounding set", func(c *Config) {
			c.Boot, c.Args, c.AmbientCaps = false, []string{"/bin/sh"}, []string{"cap_sys_module"}
		}, "ambientCaps[0] \"cap_sys_module\": not in the machine's bounding set"},
		{"relative working dir", func(c *Config) { c.WorkingDir = "tmp" }, "workingDir \"tmp\""},
		{"unclean working dir", func(c *Config) { c.WorkingDir = "/tmp/../etc" }, "workingDir"},
		{"rlimit type", func(c *Config) { c.Rlimits = []Rlimit{{Type: "RLIMIT_BOGUS"}} }, "rlimits[0]: type \"RLIMIT_BOGUS\": want one of RLIMIT_AS,"},
		{"rlimit twice", func(c *Config) { c.Rlimits = []Rlimit{{Type: "nofile"}, {Type: "RLIMIT_NOFILE"}} }, "rlimits[1]: type \"RLIMIT_NOFILE\" given twice"},
		{"rlimit soft above hard", func(c *Config) { c.Rlimits = []Rlimit{{Type: "RLIMIT_CORE", Soft: 2, Hard: 1}} }, "rlimits[0]: RLIMIT_CORE: soft limit 2 above the hard limit 1"},
		{"masked outside /proc and /sys", func(c *Config) { c.MaskedPaths = []string{"/etc/shadow"} }, "maskedPaths[0] \"/etc/shadow\""},
		{"masked /proc itself", func(c *Config) { c.MaskedPaths = []string{"/proc"} }, "maskedPaths[0]"},
		{"read-only unclean", func(c *Config) { c.ReadOnlyPaths = []string{"/proc/../etc"} }, "readOnlyPaths[0]"},
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

// TestConfigProcess: the process fields a valid config may set, and the
// environment: a key given in env replaces berth's own in its place, and a
// user other than root gets no HOME, USER or LOGNAME of root's.
func TestConfigProcess(t *testing.T) {
	good := Config{Name: "web", UUID: strings.Repeat("ab", 16), Root: Root{Dir: t.TempDir()}, Args: []string{"/bin/sh"},
		RuntimeDir: "/run/berth/machines/web", Users: &Users{Base: 1 << 20},
		User: &User{UID: 1000, GID: 1000, Groups: []uint32{10, 65535}}, AmbientCaps: []string{"CAP_NET_BIND_SERVICE", "kill"},
		WorkingDir: "/srv", NoNewPrivileges: true,
		Rlimits:     []Rlimit{{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 4096}, {Type: "core", Soft: 0, Hard: ^uint64(0)}},
		MaskedPaths: []string{"/proc/sched_debug", "/sys/firmware"}, ReadOnlyPaths: []string{"/proc/sys"}}
	if _, err := good.withDefaults(); err != nil {
		t.Fatal(err)
	}
	env := payloadEnv(Config{UUID: strings.Repeat("ab", 16), Console: "passthrough", Env: []string{"PATH=/opt/bin", "A=1", "A=2"}}, "app")
	if env[0] != "PATH=/opt/bin" || strings.Count(strings.Join(env, "\n"), "PATH=") != 1 || env[len(env)-1] != "A=2" ||
		!slices.Contains(env, "HOME=/root") || !slices.Contains(env, "USER=root") {
		t.Errorf("root's environment: %q", env)
	}
	env = payloadEnv(Config{UUID: strings.Repeat("ab", 16), Console: "passthrough", User: &User{UID: 1000}, Env: []string{"HOME=/home/u"}}, "app")
	if slices.Contains(env, "HOME=/root") || slices.Contains(env, "USER=root") || !slices.Contains(env, "HOME=/home/u") {
		t.Errorf("a user's environment: %q", env)
	}
	if got := mergeEnv([]string{"A=1", "B=2", "A=3", "C"}); !slices.Equal(got, []string{"A=3", "B=2", "C"}) {
		t.Errorf("mergeEnv: %q", got)
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
	go h.attach(srv, true, 0, 0, func(bool, string) {
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

// TestConsoleWriterRules: the first client that asks writes, a later one is
// told who does; while berth boot's terminal types, no client writes; only
// the writer sizes the console, never while a terminal owns its size.
func TestConsoleWriterRules(t *testing.T) {
	attach := func(h *consoleHub, write bool) (bool, string, net.Conn) {
		srv, cli := net.Pipe()
		t.Cleanup(func() { cli.Close() })
		type hello struct {
			writing bool
			writer  string
		}
		got := make(chan hello, 1)
		go h.attach(srv, write, 0, 0, func(w bool, who string) { got <- hello{w, who} })
		r := <-got
		return r.writing, r.writer, cli
	}
	h := newConsoleHub(nil, nil, nil)
	if w, _, _ := attach(h, true); !w {
		t.Error("the first writer may not write")
	}
	if w, who, _ := attach(h, true); w || who != "another client" {
		t.Errorf("second writer: writing %v, told %q", w, who)
	}
	if w, who, _ := attach(h, false); w || who != "" {
		t.Errorf("a reader: writing %v, told %q", w, who)
	}
	if err := h.setSize(os.Getpid(), 30, 100); err == nil {
		t.Error("a client that is not the writer resized the console")
	}

	boot := newConsoleHub(nil, io.Discard, func() (uint16, uint16) { return 24, 80 })
	boot.termWrites = true
	if w, who, _ := attach(boot, true); w || !strings.HasPrefix(who, "berth boot's terminal, PID ") {
		t.Errorf("a client while berth boot's terminal types: writing %v, told %q", w, who)
	}
	if err := boot.setSize(0, 30, 100); err == nil || !strings.Contains(err.Error(), "berth boot's terminal") {
		t.Errorf("resize while berth boot's terminal owns the size: %v", err)
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"Failed to restart x.service: Unit x.service not found.\n": "Failed to restart x.service: Unit x.service not found.",
		"a\x1b]0;owned\x07b\nc\r":                                  "a]0;ownedb c",
		strings.Repeat("y", 500):                                   strings.Repeat("y", 400) + "…",
	} {
		if got := printable(in, 400); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
