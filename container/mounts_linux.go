package container

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/berthd/berth/internal/rundir"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// mountError keeps what a failed mount(2) was asked to do, flags included.
type mountError struct {
	source, target, fstype, data string
	flags                        uintptr
	err                          error
}

func (e *mountError) Error() string {
	return fmt.Sprintf("mount %q on %q (type %q, flags %#x, data %q): %v", e.source, e.target, e.fstype, e.flags, e.data, e.err)
}

func (e *mountError) Unwrap() error { return e.err }

func mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return &mountError{source, target, fstype, data, flags, err}
	}
	return nil
}

// bindRO bind-mounts path on itself and makes that mount read-only. A bind mount
// takes its flags from the remount only, so this is always two calls.
func bindRO(path string, rec bool) error {
	fl := uintptr(unix.MS_BIND)
	if rec {
		fl |= unix.MS_REC
	}
	if err := mount(path, path, "", fl, ""); err != nil {
		return err
	}
	return mount("", path, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}

// inRoot resolves a guest path inside root the way the guest will see it, so a
// symlink in the image cannot point a mount outside the root.
func inRoot(root, p string) (string, error) {
	r, err := securejoin.SecureJoin(root, p)
	if err != nil {
		return "", fmt.Errorf("resolve %s in the machine's root: %w", p, err)
	}
	return r, nil
}

func mkdirIn(root, p string, mode os.FileMode) (string, error) {
	r, err := inRoot(root, p)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(r, mode); err != nil {
		return "", fmt.Errorf("create mount point %s: %w", p, err)
	}
	return r, nil
}

func touchIn(root, p string) (string, error) {
	r, err := inRoot(root, p)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(r), 0o755); err != nil {
		return "", err
	}
	f, err := os.OpenFile(r, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return "", fmt.Errorf("create mount point %s: %w", p, err)
	}
	f.Close()
	return r, nil
}

// The devices every machine gets (and that the v1 device cgroup allows).
var baseDevices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// setupDev makes /dev: a private tmpfs owned by the machine's root (uid on
// the host) with only harmless character devices, the usual links, shm, and
// the mount points of the devpts, mqueue and console the init stage mounts.
func setupDev(cfg Config, root string, uid uint32) error {
	dev, err := mkdirIn(root, "/dev", 0o755)
	if err != nil {
		return err
	}
	if err := mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=4m,nr_inodes=64k"+owner(uid)); err != nil {
		return err
	}
	devs := baseDevices
	if cfg.AllowTun {
		devs = append(devs, struct {
			name         string
			major, minor uint32
		}{"net/tun", 10, 200})
		_ = os.MkdirAll(filepath.Join(dev, "net"), 0o755)
	}
	for _, d := range devs {
		p := filepath.Join(dev, d.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("mknod /dev/%s: %w", d.name, err)
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	for _, d := range []string{"pts", "shm", "mqueue"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	if err := mount("tmpfs", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_STRICTATIME, "mode=1777"+owner(uid)); err != nil {
		return err
	}
	if cfg.Console == "pty" {
		// The console's mount point: the init stage binds its pty on it.
		if err := os.WriteFile(filepath.Join(dev, "console"), nil, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// owner is the mount option that gives a tmpfs's root to the machine's root.
func owner(uid uint32) string {
	if uid == 0 {
		return ""
	}
	return fmt.Sprintf(",uid=%d,gid=%d", uid, uid)
}

// mountOwn mounts what belongs to the machine's own namespaces, after it
// moved into its root: the cgroup2 of its cgroup namespace, a devpts
// instance (its user namespace's) and the mqueue of its IPC namespace; and
// the console pty, whose master it returns.
func mountOwn(cfg Config) (*os.File, error) {
	if err := mount("cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID|unix.MS_NOEXEC|unix.MS_NODEV, ""); err != nil {
		return nil, fmt.Errorf("cgroup2 for the guest: %w", err)
	}
	// gid=5 is the tty group of every common distribution (nspawn assumes it too).
	if err := mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620,gid=5"); err != nil {
		return nil, err
	}
	if err := mount("mqueue", "/dev/mqueue", "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, err
	}
	// /tmp and the definition's tmpfs mounts are the guest's own, not
	// locked: its systemd unmounts them at poweroff as on any host.
	if err := tmpfsMount("/", Mount{Type: "tmpfs", Target: "/tmp", Mode: 0o1777}, 0); err != nil {
		return nil, fmt.Errorf("/tmp: %w", err)
	}
	for i, m := range cfg.Mounts {
		if m.Type != "tmpfs" {
			continue
		}
		if err := tmpfsMount("/", m, 0); err != nil {
			return nil, fmt.Errorf("mounts[%d] (tmpfs on %s): %w", i, m.Target, err)
		}
	}
	if cfg.Console != "pty" {
		return nil, nil
	}
	return consolePty("/dev")
}

// setupRun mounts /run (with /run/host), owned by the machine's root; it
// returns /run's path.
func setupRun(cfg Config, root string, uid uint32, creds []credential) (string, error) {
	run, err := mkdirIn(root, "/run", 0o755)
	if err != nil {
		return "", err
	}
	if err := mount("tmpfs", run, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_STRICTATIME, "mode=755,size=20%,nr_inodes=800k"+owner(uid)); err != nil {
		return "", err
	}
	if err := setupRunHost(cfg, filepath.Join(run, "host"), creds); err != nil {
		return "", err
	}
	return run, nil
}

// setupSys mounts /sys read-only (that is how systemd and udev know they are
// in a container) for the calling thread's network namespace. The init stage
// mounts its cgroup namespace's cgroup2 on /sys/fs/cgroup, writable: the
// guest's systemd manages its own subtree there. See docs/runtime.md for why
// the guest gets the unified layout.
func setupSys(root string) error {
	sys, err := mkdirIn(root, "/sys", 0o555)
	if err != nil {
		return err
	}
	return mount("sysfs", sys, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC|unix.MS_NODEV, "")
}

// setupProc mounts the /proc of the new PID namespace: /proc/sys read-only
// (its net/ subtree stays writable with a private network), a boot ID of the
// machine's own, kernel internals masked, nspawn's read-only directories.
func setupProc(cfg Config, root, run string) error {
	proc, err := inRoot(root, "/proc")
	if err != nil {
		return err
	}
	psys := filepath.Join(proc, "sys")
	if err := mount(psys, psys, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	if cfg.NetworkMode == "private" {
		if err := mount(psys+"/net", psys+"/net", "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	if err := mount("", psys, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	// A fresh boot ID per boot (the kernel's is the host's), so the guest's
	// journal tells its boots apart, as under nspawn.
	if err := mount(filepath.Join(run, "host/boot-id"), filepath.Join(psys, "kernel/random/boot_id"), "", unix.MS_BIND, ""); err != nil {
		return err
	}
	inaccessible := filepath.Join(run, "host/inaccessible/reg")
	for _, f := range []string{"kallsyms", "kcore", "keys", "sysrq-trigger", "timer_list"} {
		p := filepath.Join(proc, f)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := mount(inaccessible, p, "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	for _, d := range []string{"acpi", "apm", "asound", "bus", "fs", "irq", "scsi"} {
		p := filepath.Join(proc, d)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := bindRO(p, true); err != nil {
			return err
		}
	}
	return nil
}

// consolePty allocates the console pty in the machine's own devpts instance (as
// nspawn does), so the guest sees a pty of its own and the host's /dev/pts is
// untouched, and binds the slave on /dev/console.
func consolePty(dev string) (*os.File, error) {
	master, err := os.OpenFile(filepath.Join(dev, "pts/ptmx"), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open the console pty: %w", err)
	}
	fail := func(err error) (*os.File, error) { master.Close(); return nil, err }
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return fail(fmt.Errorf("unlock the console pty: %w", err))
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		return fail(fmt.Errorf("console pty number: %w", err))
	}
	console := filepath.Join(dev, "console")
	f, err := os.OpenFile(console, os.O_CREATE|os.O_RDONLY, 0o600)
	if err != nil {
		return fail(err)
	}
	f.Close()
	if err := mount(filepath.Join(dev, "pts", strconv.Itoa(n)), console, "", unix.MS_BIND, ""); err != nil {
		return fail(err)
	}
	return master, nil
}

// setupRunHost fills /run/host, the Container Interface's window to the host:
// notify (the supervisor's sd_notify socket), os-release of the host,
// container-manager, container-uuid, inaccessible/ nodes to mask files with,
// and incoming/, where binds into the running machine arrive (bind_linux.go).
// It is read-only to the guest.
func setupRunHost(cfg Config, dir string, creds []credential) error {
	if err := os.MkdirAll(filepath.Join(dir, "inaccessible"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "inaccessible/reg"), nil, 0); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(dir, "inaccessible/dir"), 0); err != nil {
		return err
	}
	osr, err := os.ReadFile("/etc/os-release")
	if err != nil {
		osr, _ = os.ReadFile("/usr/lib/os-release")
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	id[6], id[8] = id[6]&0x0f|0x40, id[8]&0x3f|0x80
	files := map[string]string{
		"boot-id":           dashedUUID(hex.EncodeToString(id[:])) + "\n",
		"os-release":        string(osr),
		"container-manager": "berth\n",
		"container-uuid":    dashedUUID(cfg.UUID) + "\n",
	}
	for name, c := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(c), 0o444); err != nil {
			return err
		}
	}
	notify := filepath.Join(dir, "notify")
	if err := os.WriteFile(notify, nil, 0o600); err != nil {
		return err
	}
	if err := mount(rundir.Dir(cfg.RuntimeDir).NotifySocket(), notify, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "incoming"), 0o700); err != nil {
		return err
	}
	if err := mountCredentials(filepath.Join(dir, "credentials"), creds); err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	if err := bindRO(dir, true); err != nil {
		return err
	}
	return mountIncoming(cfg.Name, filepath.Join(dir, "incoming"))
}

// tmpfsMount mounts a tmpfs at m.Target inside root, its root owned by uid
// (on the host) when not 0.
func tmpfsMount(root string, m Mount, uid uint32) error {
	target, err := mkdirIn(root, m.Target, 0o755)
	if err != nil {
		return err
	}
	mode := m.Mode
	if mode == 0 {
		mode = 0o755
	}
	opts := []string{"mode=" + strconv.FormatUint(uint64(mode), 8)}
	if m.Size > 0 {
		opts = append(opts, "size="+strconv.FormatInt(m.Size, 10))
	}
	if m.Options != "" {
		opts = append(opts, m.Options)
	}
	fl := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if m.ReadOnly {
		fl |= unix.MS_RDONLY
	}
	return mount("tmpfs", target, "tmpfs", fl, strings.Join(opts, ",")+owner(uid))
}

func kindOf(st fs.FileInfo) string {
	if st.IsDir() {
		return "directory"
	}
	return "file"
}

// readOnlyRec makes the mount at target and every mount below it read-only,
// keeping their other flags (nosuid, nodev, noexec, atime): a read-only bind of
// a directory must not leave a filesystem mounted inside it writable.
// mount_setattr(2) does it in one call (Linux 5.12+); where it is missing or
// refused (an older kernel, a seccomp filter that does not know it) each mount
// is remounted read-only, parents first.
func readOnlyRec(target string) error {
	err := unix.MountSetattr(unix.AT_FDCWD, target, unix.AT_RECURSIVE|unix.AT_SYMLINK_NOFOLLOW,
		&unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	if err == nil {
		return nil
	}
	if ferr := readOnlyEach(target); ferr != nil {
		return fmt.Errorf("make %s read-only: mount_setattr: %v; remounting each mount: %w", target, err, ferr)
	}
	return nil
}

// readOnlyEach remounts target and every mount below it read-only, one
// mount(2) each. A bind remount replaces all of a mount's flags, so the ones it
// has (from statfs) are passed again.
func readOnlyEach(target string) error {
	real, err := filepath.EvalSymlinks(target)
	if err != nil {
		return err
	}
	points, err := mountsUnder(real)
	if err != nil {
		return err
	}
	if len(points) == 0 {
		return fmt.Errorf("%s is not a mount point", real)
	}
	for _, p := range points {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err != nil {
			return fmt.Errorf("statfs %s: %w", p, err)
		}
		fl := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
		for _, f := range []struct{ st, ms uintptr }{
			{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
			{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
		} {
			if uintptr(st.Flags)&f.st != 0 {
				fl |= f.ms
			}
		}
		if err := mount("", p, "", fl, ""); err != nil {
			return err
		}
	}
	return nil
}

// mountsUnder lists the mount points at dir and below it in this thread's
// mount namespace, parents before children.
func mountsUnder(dir string) ([]string, error) {
	// thread-self: a thread may have a mount namespace of its own (tests).
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		p := unescapeMountinfo(f[4])
		if (p == dir || strings.HasPrefix(p, dir+"/")) && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") < strings.Count(out[j], "/") })
	return out, nil
}
