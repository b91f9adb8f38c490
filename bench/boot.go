package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthd/berth/internal/revert"
	"github.com/berthd/berth/internal/testenv"
)

func init() {
	register("boot", "boot to READY=1 and poweroff of the Debian 12 systemd guest: berth boot vs systemd-nspawn -b on the same root, with and without private users, first and steady-state starts, supervisor RSS", benchBoot)
}

// bootRuns is the number of measured runs of each steady-state variant
// (BENCH_BOOT_RUNS overrides); firstRuns of each first start, on a fresh copy
// each (BENCH_BOOT_FIRST_RUNS overrides, default bootRuns; 0 skips the first
// starts and the copies of the trees they need).
var (
	bootRuns  = envInt("BENCH_BOOT_RUNS", 7, 1)
	firstRuns = envInt("BENCH_BOOT_FIRST_RUNS", bootRuns, 0)
)

// bootVariant is one way of booting the guest; key names its figures.
type bootVariant struct {
	key, label string
	berth      bool     // berth boot, else systemd-nspawn
	flags      []string // added to the manager's command line
}

// name is the variant's machine name stem (machine names have no '_').
func (v bootVariant) name() string { return strings.ReplaceAll(v.key, "_", "-") }

var (
	// berth boot's default is a private range of UIDs (--private-users=pick).
	vBerth    = bootVariant{key: "berth", label: "berth boot (-U pick)", berth: true}
	vBerthOff = bootVariant{key: "berth_off", label: "berth boot -U off", berth: true, flags: []string{"--private-users=off"}}
	vNspawn   = bootVariant{key: "nspawn", label: "nspawn -b"}
	// nspawn -U is --private-users=pick --private-users-ownership=auto:
	// an idmapped root where the kernel and filesystem allow, else a
	// recursive chown of the tree to the range picked.
	vNspawnU = bootVariant{key: "nspawn_u", label: "nspawn -U -b", flags: []string{"-U"}}
	// nspawn's chown, forced: what -U does where it cannot idmap the root.
	vNspawnUChown = bootVariant{key: "nspawn_u_chown", label: "nspawn -U (chown)", flags: []string{"-U", "--private-users-ownership=chown"}}
)

// benchBoot boots the cached Debian 12 minbase+systemd guest with `berth
// boot` and with `systemd-nspawn -b`, each with and without private users,
// and reports medians:
//
//   - boot: from starting the process to the guest's READY=1 (systemd sends it
//     when startup finished, i.e. is-system-running = running); both managers
//     pass it on to their own $NOTIFY_SOCKET (nspawn with --notify-ready=yes);
//   - stop: from SIGTERM to the manager (a clean poweroff for both) to the
//     manager's exit, which both do only once every guest process is gone;
//   - rss: VmRSS of the manager process half a second after READY=1.
//
// Steady state: every variant boots a copy of the guest that it booted
// before (a warm-up), bootRuns times, alternating, under a name it keeps.
// First start: a fresh copy of the guest, and of the guest with about 500 MB
// of files more, never booted, under a new name (see firstStarts).
//
// All get a private network namespace (berth's default; nspawn
// --private-network), and their console goes to a file.
func benchBoot() (map[string]any, error) {
	r := revert.New()
	defer r.Fail()
	l, err := startBootLab(r)
	if err != nil {
		return nil, err
	}
	steady, err := l.steady()
	if err != nil {
		return nil, err
	}
	figs := steadyFigures(steady)
	if firstRuns == 0 {
		l.checkLocks()
		return figs, nil
	}
	trees, err := l.trees(r)
	if err != nil {
		return nil, err
	}
	first, chowned, err := l.firstStarts(trees)
	if err != nil {
		return nil, err
	}
	firstFigures(figs, first, chowned, trees)
	l.checkLocks()
	return figs, nil
}

// bootLab is one run of the suite: its work directory with the berth built
// from this tree, berth's runtime and state directories, the cgroup nspawn
// runs in, and the steady-state roots (copies of the cached guest, which is
// itself only ever read).
type bootLab struct {
	cache, work, berth, run, state, cg string
	// root is booted by the variants that never change its owners (berth
	// always idmaps); rootU by nspawn -U, which may chown it.
	root, rootU string
	// locks are nspawn's range locks there were before the run.
	locks []string
}

// startBootLab builds berth into a new work directory and copies the guest
// twice into it; r removes the directory, the runtime directory and the
// cgroups.
func startBootLab(r *revert.Reverter) (*bootLab, error) {
	for _, c := range []string{"systemd-nspawn", "cp"} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, fmt.Errorf("%s is not installed (hack/deps.sh installs it)", c)
		}
	}
	cache, err := testenv.DebianGuestDir()
	if err != nil {
		return nil, fmt.Errorf("the Debian 12 guest: %w", err)
	}
	work, remove, err := newWorkDir("boot", "berth")
	if err != nil {
		return nil, err
	}
	r.Add(remove)
	pid := strconv.Itoa(os.Getpid())
	l := &bootLab{cache: cache, work: work, berth: filepath.Join(work, "berth"),
		// berth's runtime directory for these boots (each machine's is
		// RUN/machines/NAME, which berth boot removes itself).
		run: filepath.Join("/run", "berth-bench-"+pid),
		// Its state directory: the machines' ranges of UIDs.
		state: filepath.Join(work, "state"),
		// nspawn with --keep-unit makes payload/supervisor cgroups where
		// it is started: it runs in cgroups of its own, removed afterwards.
		cg:   "berth-bench-" + pid,
		root: filepath.Join(work, "root"), rootU: filepath.Join(work, "root-nspawn-u"),
		locks: nspawnLocks(),
	}
	r.Add(func() { os.RemoveAll(l.run) })
	r.Add(func() { removeCgroups(l.cg) })
	for _, dst := range []string{l.root, l.rootU} {
		if err := copyTree(cache, dst); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// command is the command line that boots root as machine name. Each nspawn
// run gets a cgroup of its own, cg: nspawn -U hands its payload cgroup to the
// range it picked, which an earlier run's cgroups left there would refuse.
func (l *bootLab) command(v bootVariant, root, name, cg string) *exec.Cmd {
	if v.berth {
		args := []string{"--state-dir", l.state, "--runtime-dir", l.run, "boot", "-D", root, "--name", name,
			"--network", "none", "--console-log", filepath.Join(l.work, name+".console.log")}
		return exec.Command(l.berth, append(args, v.flags...)...)
	}
	args := []string{"-c", `for h in unified systemd; do mkdir -p /sys/fs/cgroup/$h/` + cg + ` && echo $$ > /sys/fs/cgroup/$h/` + cg + `/cgroup.procs; done; exec "$@"`, "sh",
		"systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--private-network", "--notify-ready=yes",
		"--console=read-only", "-D", root, "-M", name}
	args = append(append(args, v.flags...), "-b")
	return exec.Command("/bin/sh", args...)
}

// bootSeries is one variant's measured runs.
type bootSeries struct{ boot, stop, rss []float64 }

// boot boots root once with v as machine name, its output in RUN.out, and
// removes the run's cgroups after.
func (l *bootLab) boot(v bootVariant, root, name, run string, into *bootSeries) error {
	cg := l.cg + "/" + run
	defer removeCgroups(cg)
	b, s, rss, err := bootOnce(l.command(v, root, name, cg), filepath.Join(l.work, run+".out"))
	if err != nil {
		return err
	}
	if into != nil {
		into.boot, into.stop, into.rss = append(into.boot, b), append(into.stop, s), append(into.rss, rss)
	}
	return nil
}

// steadyVariants are the steady-state variants, in the order they alternate.
var steadyVariants = []bootVariant{vBerth, vNspawn, vBerthOff, vNspawnU}

// steady boots each steady-state variant once to warm up, then bootRuns
// times, the variants alternating, each under one name throughout.
func (l *bootLab) steady() (map[string]*bootSeries, error) {
	res := map[string]*bootSeries{}
	for _, v := range steadyVariants {
		res[v.key] = &bootSeries{}
	}
	for i := -1; i < bootRuns; i++ {
		for _, v := range steadyVariants {
			root := l.root
			if v.key == vNspawnU.key {
				root = l.rootU
			}
			into := res[v.key]
			if i < 0 {
				into = nil
			}
			if err := l.boot(v, root, "bench-"+v.name(), fmt.Sprintf("steady%d-%s", i+1, v.name()), into); err != nil {
				return nil, fmt.Errorf("%s run %d: %w", v.label, i+1, err)
			}
		}
	}
	return res, nil
}

// bootOnce starts cmd with a notify socket, waits for READY=1, samples the
// process's RSS, sends SIGTERM and waits for the exit.
func bootOnce(cmd *exec.Cmd, out string) (bootMS, stopMS, rssKiB float64, err error) {
	n, err := startNotified(cmd, out)
	if err != nil {
		return 0, 0, 0, err
	}
	defer n.close()
	if err := n.awaitReady(); err != nil {
		return 0, 0, 0, err
	}
	bootMS = ms(time.Since(n.started))
	time.Sleep(500 * time.Millisecond)
	rssKiB = float64(rssKB(cmd.Process.Pid))
	t1 := time.Now()
	if err := n.stop(); err != nil {
		return 0, 0, 0, err
	}
	stopMS = ms(time.Since(t1))
	return bootMS, stopMS, rssKiB, nil
}

// notifiedRun is a manager process started with a notify socket of its own,
// its output in a file.
type notifiedRun struct {
	cmd     *exec.Cmd
	out     string
	started time.Time // just before the process was started
	sock    *net.UnixConn
	f       *os.File
	ready   <-chan error
	exited  chan struct{} // closed once the process has exited, with err
	err     error
}

// startNotified starts cmd with $NOTIFY_SOCKET at OUT.notify and its output
// in out; close removes the socket again.
func startNotified(cmd *exec.Cmd, out string) (*notifiedRun, error) {
	sock, ready, err := listenNotify(out + ".notify")
	if err != nil {
		return nil, err
	}
	n := &notifiedRun{cmd: cmd, out: out, sock: sock, ready: ready, exited: make(chan struct{})}
	if n.f, err = os.Create(out); err != nil {
		n.close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = n.f, n.f
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock.LocalAddr().String())
	n.started = time.Now()
	if err := cmd.Start(); err != nil {
		n.close()
		return nil, err
	}
	go func() { n.err = cmd.Wait(); close(n.exited) }()
	return n, nil
}

// listenNotify listens for sd_notify messages at path (a new socket) and
// reports on the channel once READY=1 came, or that none came within 60 s
// of the last message.
func listenNotify(path string) (*net.UnixConn, <-chan error, error) {
	_ = os.Remove(path)
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, nil, err
	}
	ready := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			_ = sock.SetReadDeadline(time.Now().Add(60 * time.Second))
			n, err := sock.Read(buf)
			if err != nil {
				ready <- fmt.Errorf("no READY=1 within 60s: %w", err)
				return
			}
			if slices.Contains(strings.Split(string(buf[:n]), "\n"), "READY=1") {
				ready <- nil
				return
			}
		}
	}()
	return sock, ready, nil
}

// awaitReady waits for READY=1; a process that exits first, or sends none,
// is an error (and is killed).
func (n *notifiedRun) awaitReady() error {
	select {
	case err := <-n.ready:
		if err != nil {
			_ = n.cmd.Process.Kill()
			<-n.exited
			return err
		}
		return nil
	case <-n.exited:
		log, _ := os.ReadFile(n.out)
		return fmt.Errorf("exited before READY=1 (%v): %s", n.err, tailString(log, 1500))
	}
}

// stop sends SIGTERM and waits up to 60 s for the exit (then kills).
func (n *notifiedRun) stop() error {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
		return nil
	case <-time.After(60 * time.Second):
		_ = n.cmd.Process.Kill()
		return errors.New("did not stop within 60s of SIGTERM")
	}
}

// close kills the process if it still runs, waits for it, and removes the
// socket.
func (n *notifiedRun) close() {
	if n.cmd.Process != nil {
		_ = n.cmd.Process.Kill() // an error once it has exited
		<-n.exited
	}
	if n.f != nil {
		n.f.Close()
	}
	n.sock.Close()
	_ = os.Remove(n.sock.LocalAddr().String())
}

// removeCgroups removes the bench's nspawn cgroup tree, deepest first.
func removeCgroups(cg string) {
	for _, h := range []string{"unified", "systemd"} {
		removeCgroupTree(filepath.Join("/sys/fs/cgroup", h, cg))
	}
}

// removeCgroupTree removes the cgroup directory base and those below it,
// deepest first. Processes still in them are the bench's own, left by a
// manager that was killed (a guest outlives its nspawn's SIGKILL): they are
// killed, and the removal retried until they are gone, for up to 10 s.
func removeCgroupTree(base string) {
	for try := 0; ; try++ {
		var dirs []string
		_ = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if len(dirs) == 0 {
			return
		}
		for _, d := range dirs {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
		if _, err := os.Stat(base); err != nil {
			return
		}
		if try == 200 {
			fmt.Printf("   warning: cgroup %s is left behind\n", base)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tailString(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func round(v float64) float64  { return float64(int64(v + 0.5)) }
func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

// copyTree copies src to dst (a new path) as cp -a does, sharing blocks where
// the filesystem can, and writes the copy back so that a boot after it does
// not wait for its writeback.
func copyTree(src, dst string) error {
	if err := rfRun("cp", "-a", "--reflink=auto", src, dst); err != nil {
		return err
	}
	return exec.Command("sync", "-f", dst).Run()
}

// nspawnLocks lists nspawn's (and berth's) range locks, held while a
// machine with private users runs.
func nspawnLocks() []string {
	es, _ := os.ReadDir("/run/systemd/nspawn-uid")
	var ns []string
	for _, e := range es {
		ns = append(ns, e.Name())
	}
	return ns
}

// checkLocks warns of range locks that were not there before the run: every
// machine here has stopped, so each should have removed its own.
func (l *bootLab) checkLocks() {
	for _, n := range nspawnLocks() {
		if !slices.Contains(l.locks, n) {
			fmt.Printf("   warning: /run/systemd/nspawn-uid/%s was left behind\n", n)
		}
	}
}
