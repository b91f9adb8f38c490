package container

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
		{"private users", func(c *Config) { c.PrivateUsers = "pick" }, "not yet supported"},
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
	fired := 0
	e := &EscapeReader{R: strings.NewReader("ab\x1d\x1d\x1dcd"), OnEscape: func() { fired++ }}
	b, _ := io.ReadAll(e)
	if string(b) != "abcd" || fired != 1 {
		t.Errorf("got %q, fired %d", b, fired)
	}
	fired = 0
	e = &EscapeReader{R: strings.NewReader("\x1d\x1dx"), OnEscape: func() { fired++ }}
	if b, _ = io.ReadAll(e); string(b) != "x" || fired != 0 {
		t.Errorf("two presses: got %q, fired %d", b, fired)
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
