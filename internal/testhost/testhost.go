// Package testhost boots a Debian 12 *test host* with systemd as PID 1, D-Bus and
// systemd-machined, inside systemd-nspawn, so berth's systemd integration (transient
// scopes, machined registration, unit files, start at boot) is tested against the
// real thing on a CI machine whose own PID 1 is not systemd.
//
// A test makes a host with New (a private writable copy of the cached image), puts
// files or berth itself into it (CopyIn, Install), boots it (Boot) and drives it from
// outside (Exec, Run). Poweroff and a second Boot of the same Host keep its disk, which
// is how "comes back after a reboot" is tested. Everything the host made is removed in
// t.Cleanup, also when the test fails.
package testhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// Options change how a test host is made and booted.
type Options struct {
	// Name is the host's machine name and hostname; testenv.UniqueName("th") when empty.
	Name string
	// BindRO are read-only bind mounts "SRC:DST" (nspawn --bind-ro), e.g. a cached
	// guest image the berth inside imports, which saves copying it.
	BindRO []string
	// Hybrid boots the host with the outer machine's cgroup layout (v1
	// controllers, read-only inside, plus the unified hierarchy) instead of the
	// default pure cgroup v2. Pure v2 is what current systemd hosts run (Debian 12,
	// Fedora, Ubuntu); it has no controllers inside the test host here, because the
	// outer host binds them all to v1, so limits show in systemctl show but are not
	// enforced.
	Hybrid bool
	// Resolved boots a host that runs systemd-resolved (ResolvedImage).
	Resolved bool
}

// Host is one test host.
type Host struct {
	Name string
	// Dir is the host's root directory, writable and kept across Poweroff and Boot.
	Dir string
	// BootTime is how long the last Boot took, from starting systemd-nspawn until
	// `systemctl is-system-running` said running (or degraded).
	BootTime time.Duration

	t      testing.TB
	opt    Options
	cgroup string // our own cgroup, below the root of the unified and name=systemd hierarchies
	logs   string // directory of the nspawn console logs, one per boot
	boots  int

	cmd    *exec.Cmd
	leader int
	exited chan struct{}
}

// cgroupRoots are the hierarchies systemd-nspawn writes to on this hybrid host. It
// creates "payload" and "supervisor" below its own cgroup in both; starting it in a
// cgroup of our own keeps those apart from every other nspawn on the machine.
var cgroupRoots = []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"}

// New makes a test host from the cached image: a private copy of its root (cp -a,
// about 2 s) with its own hostname. It does not boot it.
func New(t testing.TB, opt Options) *Host {
	t.Helper()
	testenv.SkipUnlessRoot(t)
	testenv.RequireCommand(t, "systemd-nspawn", "nsenter")
	image := Image(t)
	if opt.Resolved {
		image = ResolvedImage(t)
	}
	if opt.Name == "" {
		opt.Name = testenv.UniqueName("th")
	}
	base := t.TempDir()
	h := &Host{
		Name:   opt.Name,
		Dir:    filepath.Join(base, "root"),
		t:      t,
		opt:    opt,
		cgroup: "berth-testhost-" + opt.Name,
		logs:   base,
	}
	start := time.Now()
	if out, err := exec.Command("cp", "-a", "--", image, h.Dir).CombinedOutput(); err != nil {
		t.Fatalf("test host %s: copy image: %v\n%s", h.Name, err, out)
	}
	t.Logf("test host %s: copied the image in %v", h.Name, time.Since(start))
	// Cleanup runs before t.TempDir's removal (cleanups run last-in first-out), so
	// the host is down and its cgroups gone before its root is deleted.
	t.Cleanup(h.cleanup)
	if err := os.WriteFile(filepath.Join(h.Dir, "etc/hostname"), []byte(h.Name+"\n"), 0o644); err != nil {
		t.Fatalf("test host %s: %v", h.Name, err)
	}
	return h
}

// Boot starts the host with systemd-nspawn in the background and waits until its
// systemd reports the system running (or degraded: the failed units are logged).
// The outer machine has no systemd, hence --register=no --keep-unit.
func (h *Host) Boot(ctx context.Context) error {
	if h.cmd != nil {
		return fmt.Errorf("test host %s: already booted", h.Name)
	}
	if err := h.makeCgroups(); err != nil {
		return err
	}
	h.boots++
	logPath := filepath.Join(h.logs, fmt.Sprintf("console-%d.log", h.boots))
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("test host %s: %w", h.Name, err)
	}
	defer logf.Close()

	args := []string{"-q", "-D", h.Dir, "-b", "--private-network", "--capability=all",
		"--register=no", "--keep-unit", "-M", h.Name}
	for _, b := range h.opt.BindRO {
		args = append(args, "--bind-ro="+b)
	}
	// A tiny shell moves itself into our cgroups and then becomes nspawn, so nspawn's
	// payload/supervisor cgroups are made below ours from its first instruction.
	var script strings.Builder
	for _, r := range cgroupRoots {
		fmt.Fprintf(&script, "echo $$ > %s/%s/cgroup.procs && ", r, h.cgroup)
	}
	script.WriteString(`exec systemd-nspawn "$@"`)
	cmd := exec.Command("sh", append([]string{"-c", script.String(), "sh"}, args...)...)
	cmd.Stdin = nil
	cmd.Env = os.Environ()
	if !h.opt.Hybrid {
		// Unset, nspawn copies the outer host's hybrid layout; "0" would mean
		// pure cgroup v1, where systemd cannot see a scope go empty inside a
		// container.
		cmd.Env = append(cmd.Env, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1")
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Its own session: nspawn must not get the test's terminal signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("test host %s: start systemd-nspawn: %w", h.Name, err)
	}
	h.cmd = cmd
	h.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(h.exited) }()

	if err := h.waitLeader(ctx); err != nil {
		return fmt.Errorf("test host %s: %w\n%s", h.Name, err, h.consoleTail(logPath))
	}
	state, err := h.waitRunning(ctx)
	if err != nil {
		return fmt.Errorf("test host %s: %w\n%s", h.Name, err, h.consoleTail(logPath))
	}
	h.BootTime = time.Since(start)
	if state == "degraded" {
		out, _ := h.Exec(ctx, "systemctl", "--failed", "--no-pager", "--no-legend")
		h.t.Logf("test host %s booted degraded in %v; failed units:\n%s", h.Name, h.BootTime, out)
	} else {
		h.t.Logf("test host %s booted in %v", h.Name, h.BootTime)
	}
	return nil
}

// Leader is the PID, in the outer PID namespace, of the host's systemd.
func (h *Host) Leader() int { return h.leader }

// waitLeader finds the host's PID 1: the child of nspawn that is PID 1 in its own
// PID namespace.
func (h *Host) waitLeader(ctx context.Context) error {
	nspawn := h.cmd.Process.Pid
	for {
		if pid := childInitOf(nspawn); pid > 0 {
			h.leader = pid
			return nil
		}
		select {
		case <-h.exited:
			return errors.New("systemd-nspawn exited while booting")
		case <-ctx.Done():
			return fmt.Errorf("waiting for the host's init: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// childInitOf returns the child of parent that is PID 1 of a PID namespace, or 0.
func childInitOf(parent int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var ppid int
		var nspid []string
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "PPid:"); ok {
				ppid, _ = strconv.Atoi(strings.TrimSpace(v))
			}
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				nspid = strings.Fields(v)
			}
		}
		if ppid == parent && len(nspid) >= 2 && nspid[len(nspid)-1] == "1" {
			return pid
		}
	}
	return 0
}

// waitRunning asks the host's systemd until it has finished booting.
func (h *Host) waitRunning(ctx context.Context) (string, error) {
	var last string
	for {
		// --wait blocks until start-up finished, once systemd answers at all.
		out, _ := h.Exec(ctx, "systemctl", "is-system-running", "--wait")
		last = strings.TrimSpace(string(out))
		switch last {
		case "running", "degraded":
			return last, nil
		case "maintenance", "stopping":
			return last, fmt.Errorf("system state %q", last)
		}
		select {
		case <-h.exited:
			return last, errors.New("systemd-nspawn exited while booting")
		case <-ctx.Done():
			return last, fmt.Errorf("waiting for is-system-running (last %q): %w", last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Exec runs a command inside the booted host, in all of its namespaces (nsenter -a),
// and returns its combined output. The process stays in the outer machine's cgroup,
// outside the host's systemd tree: use Run for anything that must live in a unit
// (creating scopes with its own PID, for example).
func (h *Host) Exec(ctx context.Context, args ...string) ([]byte, error) {
	if h.leader == 0 {
		return nil, fmt.Errorf("test host %s: not booted", h.Name)
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(h.leader), "-a", "--"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("test host %s: %s: %w", h.Name, strings.Join(args, " "), err)
	}
	return out, nil
}

// Run runs a command inside the host as a transient service of its systemd
// (systemd-run --wait --pipe), so it is part of the host's cgroup tree the way a
// process started there would be, with env as extra environment ("K=V"). It returns
// the combined output and fails when the command exits non-zero.
func (h *Host) Run(ctx context.Context, env []string, args ...string) ([]byte, error) {
	run := []string{"systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=exec"}
	for _, e := range env {
		run = append(run, "--setenv="+e)
	}
	return h.Exec(ctx, append(append(run, "--"), args...)...)
}

// CopyIn copies the host file src into the test host's root at dst (an absolute
// path inside the host), keeping its mode. It works whether the host runs or not.
func (h *Host) CopyIn(src, dst string) error {
	target := filepath.Join(h.Dir, dst)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("test host %s: %w", h.Name, err)
	}
	if out, err := exec.Command("cp", "-a", "--", src, target).CombinedOutput(); err != nil {
		return fmt.Errorf("test host %s: copy %s to %s: %v: %s", h.Name, src, dst, err, out)
	}
	return nil
}

// Poweroff shuts the host down cleanly (SIGRTMIN+3 to its systemd, as
// `machinectl poweroff` does) and waits for systemd-nspawn to exit.
func (h *Host) Poweroff(ctx context.Context) error {
	if h.cmd == nil {
		return nil
	}
	if err := syscall.Kill(h.leader, syscall.Signal(sigRTMIN+3)); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("test host %s: poweroff: %w", h.Name, err)
	}
	select {
	case <-h.exited:
	case <-ctx.Done():
		return fmt.Errorf("test host %s: waiting for poweroff: %w", h.Name, ctx.Err())
	}
	h.cmd, h.leader = nil, 0
	return h.removeCgroups()
}

// sigRTMIN is the kernel's SIGRTMIN (glibc reserves 32 and 33 for itself).
const sigRTMIN = 34

// cleanup powers the host off (killing it if that does not finish in time), and
// removes the cgroups it made. Only the nspawn this Host started and its own
// cgroups are touched.
func (h *Host) cleanup() {
	if h.cmd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		err := h.Poweroff(ctx)
		h.t.Logf("test host %s: powered off in %v", h.Name, time.Since(start))
		if err != nil {
			h.t.Logf("test host %s: %v; killing it", h.Name, err)
			// SIGKILL to the PID namespace's init ends every process in it.
			_ = syscall.Kill(h.leader, syscall.SIGKILL)
			_ = h.cmd.Process.Kill()
			select {
			case <-h.exited:
			case <-time.After(10 * time.Second):
				h.t.Errorf("test host %s: systemd-nspawn (pid %d) did not exit", h.Name, h.cmd.Process.Pid)
			}
			h.cmd, h.leader = nil, 0
		}
	}
	if err := h.removeCgroups(); err != nil {
		h.t.Errorf("%v", err)
	}
}

func (h *Host) makeCgroups() error {
	for _, r := range cgroupRoots {
		if err := os.MkdirAll(filepath.Join(r, h.cgroup), 0o755); err != nil {
			return fmt.Errorf("test host %s: cgroup: %w", h.Name, err)
		}
	}
	return nil
}

// removeCgroups removes our cgroup directories bottom-up. Empty cgroups can be
// removed with rmdir only; a cgroup still holding a process fails with EBUSY, so a
// few retries cover processes that are just exiting.
func (h *Host) removeCgroups() error {
	var errs []error
	for _, r := range cgroupRoots {
		top := filepath.Join(r, h.cgroup)
		var err error
		for try := 0; try < 50; try++ {
			if err = rmdirTree(top); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("test host %s: remove cgroup: %w", h.Name, err))
		}
	}
	return errors.Join(errs...)
}

func rmdirTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := rmdirTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOENT) {
		return &os.PathError{Op: "rmdir", Path: dir, Err: err}
	}
	return nil
}

func (h *Host) consoleTail(path string) string {
	b, _ := os.ReadFile(path)
	b = bytes.TrimSpace(b)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return "console:\n" + string(b)
}

// insideEnv marks a test binary that RunTestBinary runs inside a test host.
const insideEnv = "BERTH_TEST_IN_TESTHOST"

// Inside reports whether this test binary runs inside a test host (started by
// RunTestBinary), where the tests that boot a test host themselves must skip.
func Inside() bool { return os.Getenv(insideEnv) != "" }

// RunTestBinary copies the running test binary into the host and runs the tests
// matching pattern there, as a transient service of the host's systemd (see Run),
// with Inside() true; -test.v follows the outer run. The host must be booted.
// The output is the inner run's.
func (h *Host) RunTestBinary(ctx context.Context, pattern string) ([]byte, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	bin := "/usr/local/libexec/berth-test/" + filepath.Base(self)
	if err := h.CopyIn(self, bin); err != nil {
		return nil, err
	}
	args := []string{bin, "-test.run", pattern, "-test.count=1"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	return h.Run(ctx, []string{insideEnv + "=1"}, args...)
}
