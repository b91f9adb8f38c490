package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berthd/berth/internal/revert"
)

// lxcLab is a suite's LXC containers: their lxcpath, a copy of the guest
// for each, and the cgroups every lxc-start runs in, made below the bench's
// own cgroup in each hierarchy, so that LXC (with lxc.cgroup.relative)
// makes its containers' and monitors' cgroups below them and not at the
// hierarchies' roots.
type lxcLab struct {
	path    string   // lxc-start -P
	work    string   // the containers' logs and notify sockets
	roots   []string // container i's root
	cgroups []string // the cgroup directories lxc-start joins
}

// newLXCLab lays out n containers (not their roots: the caller copies the
// guest to each of roots) under work; r stops any container still running
// and removes the cgroups.
func newLXCLab(r *revert.Reverter, work, cg string, n int) (*lxcLab, error) {
	l := &lxcLab{path: filepath.Join(work, "lxc"), work: filepath.Join(work, "lxc-run")}
	for _, d := range []string{l.path, l.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	for i := range n {
		l.roots = append(l.roots, filepath.Join(work, "lxc-roots", strconv.Itoa(i)))
	}
	r.Add(func() {
		for _, d := range l.cgroups {
			removeCgroupTree(d)
		}
	})
	if err := l.makeCgroups(cg); err != nil {
		return nil, err
	}
	r.Add(func() {
		for i := range n {
			_ = exec.Command("lxc-stop", "-P", l.path, "-n", l.name(i), "-k").Run()
		}
	})
	return l, nil
}

// name is container i's name.
func (l *lxcLab) name(i int) string { return "c" + strconv.Itoa(i) }

// makeCgroups makes cg below this process's cgroup in each hierarchy (a
// cpuset one with its parent's CPUs and memory nodes, without which no
// process may join it).
func (l *lxcLab) makeCgroups(cg string) error {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID:CONTROLLERS:PATH; cgroup2's controllers are empty.
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		mount := strings.TrimPrefix(parts[1], "name=")
		if mount == "" {
			mount = "unified"
		}
		base := filepath.Join("/sys/fs/cgroup", mount)
		if _, err := os.Stat(base); err != nil {
			continue
		}
		dir := filepath.Join(base, parts[2], cg)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		l.cgroups = append(l.cgroups, dir)
		if strings.Contains(parts[1], "cpuset") {
			for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(filepath.Dir(dir), file))
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, file), b, 0o644)
				}
				if err != nil {
					return fmt.Errorf("cgroup %s: %s: %w", dir, file, err)
				}
			}
		}
	}
	return sc.Err()
}

// notifySocket is where container i's guest sends sd_notify messages: a
// socket in a directory bound into the guest at /mnt, named by
// $NOTIFY_SOCKET (systemd as PID 1 sends READY=1 there once startup
// finished, as it does to nspawn).
func (l *lxcLab) notifySocket(i int) string {
	return filepath.Join(l.work, l.name(i), "notify")
}

// configure writes container i's configuration: the guest's root, no
// network but loopback, no console and no ttys, no AppArmor (this kernel
// has none), the notify socket, and cgroups below the caller's.
func (l *lxcLab) configure(i int) error {
	name := l.name(i)
	cfg := fmt.Sprintf(`lxc.include = /usr/share/lxc/config/common.conf
lxc.uts.name = %s
lxc.rootfs.path = dir:%s
lxc.net.0.type = empty
lxc.console.path = none
lxc.tty.max = 0
lxc.apparmor.profile = unconfined
lxc.init.cmd = /sbin/init
lxc.cgroup.relative = 1
lxc.environment = NOTIFY_SOCKET=/mnt/notify
lxc.mount.entry = %s mnt none bind,create=dir 0 0
`, name, l.roots[i], filepath.Dir(l.notifySocket(i)))
	for _, d := range []string{filepath.Join(l.path, name), filepath.Dir(l.notifySocket(i))} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(l.path, name, "config"), []byte(cfg), 0o644)
}

// start is `lxc-start -d` of container i, run in the lab's cgroups; it
// returns once the container's init runs.
func (l *lxcLab) start(i int) error {
	var join strings.Builder
	for _, d := range l.cgroups {
		fmt.Fprintf(&join, "echo $$ > %s/cgroup.procs && ", d)
	}
	log := filepath.Join(l.work, l.name(i)+".log")
	out, err := exec.Command("/bin/sh", "-c", join.String()+`exec "$@"`, "sh",
		"lxc-start", "-P", l.path, "-n", l.name(i), "-d", "-o", log, "-l", "WARN").CombinedOutput()
	if err != nil {
		b, _ := os.ReadFile(log)
		return fmt.Errorf("lxc-start %s: %v: %s%s", l.name(i), err, out, tailString(b, 1500))
	}
	return nil
}

// stop is lxc-stop of container i: a clean shutdown (SIGPWR to its init),
// returning once the container has stopped.
func (l *lxcLab) stop(i int) error {
	if out, err := exec.Command("lxc-stop", "-P", l.path, "-n", l.name(i)).CombinedOutput(); err != nil {
		return fmt.Errorf("lxc-stop %s: %v: %s", l.name(i), err, out)
	}
	return nil
}

// pids are container i's init and its monitor ("[lxc monitor] PATH NAME",
// the init's parent).
func (l *lxcLab) pids(i int) (init, monitor int, err error) {
	out, err := exec.Command("lxc-info", "-P", l.path, "-n", l.name(i), "-p", "-H").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("lxc-info %s: %w", l.name(i), err)
	}
	if init, err = strconv.Atoi(strings.TrimSpace(string(out))); err != nil {
		return 0, 0, fmt.Errorf("lxc-info %s: no init: %q", l.name(i), out)
	}
	monitor = parentOf(init)
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", monitor))
	if !strings.HasPrefix(string(cmdline), "[lxc monitor]") {
		return 0, 0, fmt.Errorf("container %s: the parent of its init (%d) is %q, not its monitor", l.name(i), init, cmdline)
	}
	return init, monitor, nil
}

// parentOf is the parent of process pid, 0 when unknown.
func parentOf(pid int) int { return procNumber(pid, "status", "PPid:") }
