// Package testenv is shared by berth's tests: the root check, unique names, golden
// files (-update), polling for a condition instead of sleeping, and the guest
// images the integration tests boot (built from Debian's packages and cached
// under /var/cache/berth-test, or $BERTH_TEST_CACHE, between runs). Booting a
// machine and waiting for it is package machinetest's.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/internal/osimage"
)

// SkipUnlessRoot skips t with a reason when the test does not run as root.
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: this test needs root (namespaces, mounts, cgroups, netlink); run `sudo make test`")
	}
	if cgoBuild {
		// The application-mode reaper drops its capabilities on every thread
		// (syscall.AllThreadsSyscall), which a binary with cgo cannot do.
		t.Fatal("berth is built static (CGO_ENABLED=0) and its machine tests must be too: run CGO_ENABLED=0 go test … (make test does)")
	}
}

// SkipIfShort skips slow integration tests under `go test -short`.
func SkipIfShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping integration test in -short mode")
	}
}

// RequireCommand skips t when a host command the test drives is missing. The
// project's hack/deps.sh installs every one of them.
func RequireCommand(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("skipping: %s is not installed (hack/deps.sh installs it)", n)
		}
	}
}

// UniqueName returns prefix followed by a short random suffix, a valid machine
// name that no other test (or developer running tests beside you) uses.
func UniqueName(prefix string) string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return prefix + "-" + hex.EncodeToString(b[:])
}

// CacheDir is where built test images are kept between runs.
func CacheDir() string {
	if d := os.Getenv("BERTH_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/berth-test"
}

// Mirror is the Debian mirror debootstrap uses ($BERTH_DEBIAN_MIRROR overrides it).
func Mirror() string {
	if m := os.Getenv("BERTH_DEBIAN_MIRROR"); m != "" {
		return m
	}
	return "http://deb.debian.org/debian"
}

// GuestPackages are the packages of the Debian systemd guest, as the tests and the
// examples declare it.
var GuestPackages = []string{"systemd", "systemd-sysv", "dbus", "iproute2"}

// DebianGuest returns the root of a cached Debian 12 (bookworm) minbase guest
// with systemd, built with debootstrap on first use (about 40 s). Treat it as
// read-only: use CopyTree for a root a machine may write to.
func DebianGuest(t testing.TB) string {
	t.Helper()
	return Debootstrap(t, "debian12", "bookworm", GuestPackages)
}

// Debootstrap returns the root of a cached minbase debootstrap of suite with the
// extra packages, building it under CacheDir()/name on first use. Concurrent
// callers (other test binaries) wait for one build.
func Debootstrap(t testing.TB, name, suite string, packages []string) string {
	t.Helper()
	SkipUnlessRoot(t)
	RequireCommand(t, "debootstrap")
	return must(t, name)(DebootstrapDir(name, suite, packages))
}

// BusyboxGuest returns the root of a cached tiny guest whose init is busybox's,
// made from Debian's busybox-static. Its inittab prints "berth-busybox-booted" on
// the console when it comes up and "berth-busybox-shutdown" when it goes down.
func BusyboxGuest(t testing.TB) string {
	t.Helper()
	SkipUnlessRoot(t)
	return must(t, "busybox")(BusyboxGuestDir())
}

func must(t testing.TB, name string) func(string, error) string {
	return func(dir string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatalf("test image %s: %v", name, err)
		}
		return dir
	}
}

// DebianGuestDir is DebianGuest for code without a testing.TB (make bench).
func DebianGuestDir() (string, error) {
	return DebootstrapDir("debian12", "bookworm", GuestPackages)
}

// DebootstrapDir is Debootstrap for code without a testing.TB.
func DebootstrapDir(name, suite string, packages []string) (string, error) {
	return Cached(name, func(tmp string) error {
		if _, err := exec.LookPath("debootstrap"); err != nil {
			return fmt.Errorf("debootstrap is not installed (hack/deps.sh installs it)")
		}
		args := []string{"--variant=minbase"}
		if len(packages) > 0 {
			args = append(args, "--include="+strings.Join(packages, ","))
		}
		args = append(args, suite, tmp, Mirror())
		cmd := exec.Command("debootstrap", args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("debootstrap %s: %w\n%s", strings.Join(args, " "), err, Tail(out, 2000))
		}
		// The guest's own apt lists and caches are not needed by any test.
		_ = os.RemoveAll(filepath.Join(tmp, "var/cache/apt/archives"))
		_ = os.MkdirAll(filepath.Join(tmp, "var/cache/apt/archives/partial"), 0o755)
		// An image, not a machine: no machine ID, hostname or resolver of the
		// host that built it (as berth's own debootstrap images).
		return osimage.Generalize(tmp)
	})
}

// BusyboxGuestDir is BusyboxGuest for code without a testing.TB.
func BusyboxGuestDir() (string, error) {
	return Cached("busybox", func(tmp string) error {
		bb, err := exec.LookPath("busybox")
		if err != nil {
			return fmt.Errorf("busybox-static is not installed (hack/deps.sh installs it)")
		}
		for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "proc", "sys", "dev", "run", "tmp", "root", "var/log"} {
			if err := os.MkdirAll(filepath.Join(tmp, d), 0o755); err != nil {
				return err
			}
		}
		data, err := os.ReadFile(bb)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tmp, "bin/busybox"), data, 0o755); err != nil {
			return err
		}
		out, err := exec.Command(bb, "--list-full").Output()
		if err != nil {
			return fmt.Errorf("busybox --list-full: %w", err)
		}
		for _, p := range strings.Fields(string(out)) {
			dst := filepath.Join(tmp, p)
			if _, err := os.Lstat(dst); err == nil {
				continue
			}
			if err := os.Symlink("/bin/busybox", dst); err != nil {
				return err
			}
		}
		files := map[string]string{
			"etc/inittab": "::sysinit:/etc/init.d/rcS\n" +
				"::ctrlaltdel:/sbin/reboot\n" +
				"::shutdown:/bin/echo berth-busybox-shutdown\n",
			"etc/init.d/rcS": "#!/bin/sh\n/bin/hostname -F /etc/hostname 2>/dev/null\necho berth-busybox-booted\n",
			"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\n",
			"etc/group":      "root:x:0:\n",
			"etc/os-release": "NAME=\"BusyBox\"\nID=busybox\nPRETTY_NAME=\"berth busybox test guest\"\n",
		}
		for p, c := range files {
			mode := os.FileMode(0o644)
			if strings.HasPrefix(p, "etc/init.d/") {
				mode = 0o755
			}
			if err := os.WriteFile(filepath.Join(tmp, p), []byte(c), mode); err != nil {
				return err
			}
		}
		return nil
	})
}

// Cached builds CacheDir()/name once with build (which fills a temporary directory,
// or writes a temporary file, next to it) and renames it into place, under an
// exclusive lock so concurrent test binaries build it once. A half-built image
// never appears under the final name.
func Cached(name string, build func(tmp string) error) (string, error) {
	dir := CacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	final := filepath.Join(dir, name)
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	unlock, err := fsutil.Lock(filepath.Join(dir, "."+name+".lock"), true)
	if err != nil {
		return "", fmt.Errorf("lock: %w", err)
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	tmp := filepath.Join(dir, "."+name+".tmp")
	_ = os.RemoveAll(tmp)
	fmt.Fprintf(os.Stderr, "building test image %s in %s (cached for later runs)\n", name, final)
	if err := build(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		_ = os.RemoveAll(tmp)
		return "", err
	}
	return final, nil
}

// CopyTree copies the tree at src to a new directory under t.TempDir() with cp -a
// (owners, modes, xattrs, devices, hard links kept) and returns it: a root a test
// may change freely. The copy is removed when the test ends.
func CopyTree(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command("cp", "-a", "--", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", src, dst, err, out)
	}
	return dst
}

// cgroupMount is one mounted cgroup hierarchy of this host.
type cgroupMount struct {
	dir     string
	unified bool
	opts    []string // v1: the controllers (and other mount options)
}

// mountinfo is the mount table the cgroup helpers read (a test of them
// points it at a file of its own).
var mountinfo = "/proc/self/mountinfo"

func cgroupMounts(t testing.TB) []cgroupMount {
	t.Helper()
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		t.Fatal(err)
	}
	var out []cgroupMount
	seen := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		f, p := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(p) < 3 || f[3] != "/" || (p[0] != "cgroup" && p[0] != "cgroup2") || seen[f[4]] {
			continue
		}
		seen[f[4]] = true
		out = append(out, cgroupMount{dir: f[4], unified: p[0] == "cgroup2", opts: strings.Split(p[2], ",")})
	}
	return out
}

// CgroupDirs is the directory of the cgroup path in every mounted hierarchy.
func CgroupDirs(t testing.TB, path string) []string {
	t.Helper()
	var out []string
	for _, m := range cgroupMounts(t) {
		out = append(out, filepath.Join(m.dir, path))
	}
	return out
}

// CgroupLimit reads a limit of the cgroup at path from whichever hierarchy
// holds its controller, in the kernel's own terms, so a test asserts the same
// values on a hybrid host (v1 controllers) and on a pure cgroup2 host:
// "memory" is the hard limit in bytes (memory.limit_in_bytes, memory.max),
// "pids" is pids.max, "cpu" is the quota in µs per 100 ms period
// (cpu.cfs_quota_us, the first field of cpu.max). Unset limits read as the
// kernel writes them (-1 or a huge number on v1, "max" on v2).
func CgroupLimit(t testing.TB, path, controller string) string {
	t.Helper()
	v1 := map[string]string{"memory": "memory.limit_in_bytes", "pids": "pids.max", "cpu": "cpu.cfs_quota_us"}
	v2 := map[string]string{"memory": "memory.max", "pids": "pids.max", "cpu": "cpu.max"}
	if v1[controller] == "" {
		t.Fatalf("CgroupLimit: unknown controller %q", controller)
	}
	read := func(f string) (string, bool) {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", false
		}
		return strings.TrimSpace(string(b)), true
	}
	for _, m := range cgroupMounts(t) {
		if m.unified {
			continue
		}
		for _, o := range m.opts {
			if o == controller {
				if v, ok := read(filepath.Join(m.dir, path, v1[controller])); ok {
					return v
				}
			}
		}
	}
	for _, m := range cgroupMounts(t) {
		if !m.unified {
			continue
		}
		if v, ok := read(filepath.Join(m.dir, path, v2[controller])); ok {
			if controller == "cpu" {
				v, _, _ = strings.Cut(v, " ")
			}
			return v
		}
	}
	t.Fatalf("no %s limit of cgroup %s in any hierarchy", controller, path)
	return ""
}

// HasController reports whether this host can enforce a controller's limits:
// a v1 hierarchy has it, or the cgroup2 root offers it. (A pure cgroup2 test
// host on a hybrid machine has none: the machine binds them all to v1.)
func HasController(t testing.TB, controller string) bool {
	t.Helper()
	for _, m := range cgroupMounts(t) {
		if !m.unified {
			for _, o := range m.opts {
				if o == controller {
					return true
				}
			}
			continue
		}
		b, _ := os.ReadFile(filepath.Join(m.dir, "cgroup.controllers"))
		for _, c := range strings.Fields(string(b)) {
			if c == controller {
				return true
			}
		}
	}
	return false
}
