package container

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// splitCgroup makes the "supervisor" and "payload" children of the machine's
// cgroup in every hierarchy and moves the supervisor into its own: the payload
// cgroup is the root of the guest's cgroup namespace, and the guest's systemd
// owns everything below it. It then settles the machine's device fence: the
// driver's on the machine's cgroup, and a BPF program of berth's own on the
// payload when the driver's fence is not one (systemd's DevicePolicy).
func (s *supervisor) splitCgroup(cg Cgroup) error {
	path := cg.Path
	for _, h := range s.hs {
		for _, sub := range []string{"supervisor", "payload"} {
			if _, err := mkdirCgroup(h, h.dir(filepath.Join(path, sub))); err != nil {
				return fmt.Errorf("cgroup %s: %w", h.dir(filepath.Join(path, sub)), err)
			}
		}
	}
	if err := mirrorThrottles(s.hs, path); err != nil {
		return err
	}
	pauseWarm()
	if err := movePID(s.hs, filepath.Join(path, "supervisor"), os.Getpid()); err != nil {
		return err
	}
	resumeWarm(filepath.Join(path, "supervisor"))
	fences := []string{}
	if cg.DeviceFence != "" {
		fences = append(fences, cg.DeviceFence)
	}
	noBPF := cg.NoBPF
	for _, h := range s.hs {
		if !h.Unified {
			continue
		}
		// Hand the controllers the machine has down to the payload, so the
		// guest's systemd can use them (possible now that the machine's cgroup
		// holds no process itself).
		ctrls, _ := os.ReadFile(filepath.Join(h.dir(path), "cgroup.controllers"))
		var on []string
		for _, c := range strings.Fields(string(ctrls)) {
			on = append(on, "+"+c)
		}
		if len(on) > 0 {
			_ = writeFile(filepath.Join(h.dir(path), "cgroup.subtree_control"), strings.Join(on, " "))
		}
		if !cg.FenceIsBPF {
			payload := filepath.Join(path, "payload")
			if err := attachDeviceFilter(h.dir(payload), DeviceRules(s.cfg.AllowTun)); err == nil {
				fences = append(fences, "bpf on "+payload)
			} else if noBPF == "" {
				noBPF = err.Error()
			}
		}
	}
	fence := strings.Join(fences, "; ")
	if fence == "" {
		switch {
		case insideContainer():
			// Nested in another container manager (whose seccomp filter
			// typically refuses bpf()): its device policy covers this whole
			// subtree, ours included.
			fence = "the outer container manager's (this host is a container: " + noBPF + ")"
			s.log.Warn("no device fence of berth's own inside a container; relying on the outer manager's device policy", "err", noBPF)
		case s.cfg.DeviceFenceOptional:
			fence = "none (security.deviceFence: optional; " + noBPF + ")"
			s.log.Warn("starting without a device fence (security.deviceFence: optional)", "err", noBPF)
		default:
			return fmt.Errorf("%w (%s)", errNoDevicePolicy, noBPF)
		}
	}
	s.setState(func(st *State) { st.DeviceFence = fence })
	return nil
}

// insideContainer reports whether this host is itself a container, as
// systemd-detect-virt --container tells it: the markers systemd and the
// Container Interface leave, or $container in PID 1's environment.
func insideContainer() bool {
	for _, f := range []string{"/run/systemd/container", "/run/host/container-manager"} {
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	env, err := os.ReadFile("/proc/1/environ")
	return err == nil && bytes.Contains(append([]byte{0}, env...), []byte("\x00container="))
}

// ownCgroups reads the calling process's cgroup in every hierarchy, to return
// to it when the machine ends (the berth process of `berth boot` lives on).
func ownCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) == 3 {
			m[parts[1]] = parts[2]
		}
	}
	return m, nil
}

// Moving a process between cgroups takes the kernel's cgroup_threadgroup_rwsem
// for writing; when no move happened for a while, the first one waits for an
// RCU grace period (the lock leaves its fast path: 10–15 ms on this 2-CPU VM,
// a quarter of the time from berth boot to the guest's init), and moves
// within a grace period after the last one do not wait. The lock is the
// host's: the guest's systemd pays it again for its own first move. So a
// supervisor keeps the fast path on from its first moment until the guest has
// booted: a move of itself into the cgroup it is in (no change, nothing to
// undo) every few milliseconds, paused whenever it is really moved (a write
// in flight would put it back). Hosts whose cgroup hierarchies are mounted
// with favordynmods (Linux 6.0) never wait; there the moves cost ~30 µs each.
//
// It pays for one machine started alone (berth boot), never for many: each
// move holds the lock that every fork and exit on the host takes, and while
// the fast path is kept on they all take its slow side. 20 Debian guests
// from one berthd apply (bench many, the runs after the first) took 1.09–1.19
// times the CPU time of 20 nspawn in the same run with every supervisor
// warming, 1.07–1.12 with one at a time, 0.79–1.06 with none: so berthd's
// supervisors never do it, and of several berth boots on one host one does at
// a time (the token, an flock on the hierarchy's root directory).
var warm struct {
	once  sync.Once
	mu    sync.Mutex // held across each write: pause waits for one in flight
	mount string     // the hierarchy whose cgroup.procs is written
	token *os.File   // the hierarchy's root, flocked while this one warms
	procs string     // where the supervisor is now; "" while paused
	ended bool
}

// warmFor is how long a supervisor keeps the fast path on: through the guest's
// own first moves (systemd's, in its first hundred milliseconds or so).
const warmFor = 2 * time.Second

// warmEvery is the time between two no-op moves: well within a grace period.
const warmEvery = 3 * time.Millisecond

// WarmCgroupMoves starts the supervisor's no-op moves (see warm). berth boot,
// a process that is going to supervise one machine, calls it first thing;
// berthd's supervisors do not. It is idempotent.
func WarmCgroupMoves() { warm.once.Do(startWarm) }

func startWarm() {
	hs, err := hierarchies()
	if err != nil {
		return
	}
	own, err := ownCgroups()
	if err != nil {
		return
	}
	for _, h := range hs {
		if p, ok := own[strings.Join(h.Controllers, ",")]; ok {
			warm.mount, warm.procs = h.Mount, filepath.Join(h.dir(p), "cgroup.procs")
			break
		}
	}
	if warm.procs == "" {
		return
	}
	token, err := os.Open(warm.mount)
	if err == nil && unix.Flock(int(token.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		token.Close() // another supervisor keeps the fast path on
		err = unix.EWOULDBLOCK
	}
	if err != nil {
		warm.mu.Lock()
		warm.ended, warm.procs = true, ""
		warm.mu.Unlock()
		return
	}
	warm.token = token
	pid := []byte(strconv.Itoa(os.Getpid()))
	go func() {
		deadline := time.Now().Add(warmFor)
		for time.Now().Before(deadline) {
			warm.mu.Lock()
			if warm.ended {
				warm.mu.Unlock()
				return
			}
			failed := warm.procs != "" && os.WriteFile(warm.procs, pid, 0) != nil
			warm.mu.Unlock()
			if failed {
				endWarm() // not ours to move: no help, no harm
				return
			}
			time.Sleep(warmEvery)
		}
		endWarm()
	}()
}

// pauseWarm stops the no-op moves before the supervisor is moved for real;
// when it returns, none is in flight.
func pauseWarm() {
	warm.mu.Lock()
	warm.procs = ""
	warm.mu.Unlock()
}

// resumeWarm goes on with the moves in the cgroup the supervisor is in now,
// path in the warm hierarchy.
func resumeWarm(path string) {
	warm.mu.Lock()
	if warm.mount != "" && !warm.ended {
		warm.procs = filepath.Join(warm.mount, path, "cgroup.procs")
	}
	warm.mu.Unlock()
}

// endWarm stops the moves for good (the supervisor leaves its cgroup).
func endWarm() {
	warm.mu.Lock()
	warm.ended, warm.procs = true, ""
	if warm.token != nil {
		warm.token.Close() // the token goes to the next supervisor
		warm.token = nil
	}
	warm.mu.Unlock()
}

func restoreCgroups(hs []hierarchy, own map[string]string) {
	for _, h := range hs {
		key := strings.Join(h.Controllers, ",")
		p, ok := own[key]
		if !ok {
			continue
		}
		_ = os.WriteFile(filepath.Join(h.dir(p), "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
	}
}

// placePayload moves the init stage (pid) into the machine's payload cgroup
// in every hierarchy. With Users, the payload's cgroup2 directory and the
// files the kernel lists for delegation are handed to the machine's root, as
// systemd delegates a subtree (and nspawn -U does): the guest's systemd
// manages its own cgroups below it. The machine's cgroup (its limits, its
// device fence) and every v1 hierarchy stay the host's.
func (s *supervisor) placePayload(path string, pid int) error {
	payload := filepath.Join(path, "payload")
	if err := movePID(s.hs, payload, pid); err != nil {
		return err
	}
	u := s.cfg.Users
	if u == nil {
		return nil
	}
	for _, h := range s.hs {
		if !h.Unified {
			continue
		}
		dir := h.dir(payload)
		for _, f := range append([]string{""}, delegateFiles()...) {
			p := filepath.Join(dir, f)
			if err := os.Lchown(p, int(u.Base), int(u.Base)); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("delegate %s to the machine's root: %w", p, err)
			}
		}
	}
	return nil
}

// delegateFiles are the cgroup2 files a delegated subtree's owner writes:
// the kernel's list (/sys/kernel/cgroup/delegate), or the one it has had
// since Linux 4.15 where it has none.
func delegateFiles() []string {
	if b, err := os.ReadFile("/sys/kernel/cgroup/delegate"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			return f
		}
	}
	return []string{"cgroup.procs", "cgroup.threads", "cgroup.subtree_control"}
}
