package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sigRTMin3 is SIGRTMIN+3 as glibc numbers it (glibc keeps 32 and 33), the
// signal systemd takes as "power off".
const sigRTMin3 = unix.Signal(34 + 3)

// classify turns PID 1's end into an exit status, or a reboot.
func (s *supervisor) classify(ps *os.ProcessState) (ExitStatus, bool) {
	s.mu.Lock()
	how := payloadEnd{killed: s.killedByUs, stopping: s.stopping, kind: s.kind, requested: s.requested}
	end := s.endStatus
	s.mu.Unlock()
	if end != nil {
		return *end, false
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	return classify(ws, how)
}

// payloadEnd is what the supervisor knows about how PID 1 came to end.
type payloadEnd struct {
	killed   bool   // berth killed it (stop timeout, terminate, cancel)
	stopping bool   // a poweroff was asked for: the next exit is final
	kind     string // the init: "systemd", "busybox", "init", "app"
	// requested holds (bit sig-1) every signal berth sent on request (kill).
	requested uint64
}

// classify is what PID 1's wait status means, a pure function (table-tested).
// In a PID namespace, reboot(2) ends init with SIGHUP for a restart and SIGINT
// for a poweroff or halt; so does a booted init that took berth's SIGHUP or
// SIGINT and rebooted or powered off. A signal berth sent on request that
// ends PID 1 is "killed", not "crashed"; anything else that kills it is a
// crash. An application's exit code is its own; a booted init that exits 0 has
// powered off.
func classify(ws syscall.WaitStatus, how payloadEnd) (st ExitStatus, reboot bool) {
	booted := how.kind != "app"
	rebootSig := booted && ws.Signaled() && (ws.Signal() == unix.SIGHUP || ws.Signal() == unix.SIGINT)
	switch {
	case how.killed:
		return ExitStatus{Code: 128 + int(unix.SIGKILL), Reason: ReasonKilled}, false
	case ws.Signaled() && !rebootSig && how.requested&(1<<(uint(ws.Signal())-1)) != 0:
		return ExitStatus{Code: 128 + int(ws.Signal()), Reason: ReasonKilled,
			Error: "PID 1 died of " + unix.SignalName(ws.Signal()) + " sent on request"}, false
	case ws.Exited():
		if !booted || ws.ExitStatus() != 0 {
			return ExitStatus{Code: ws.ExitStatus(), Reason: ReasonExited}, false
		}
		return ExitStatus{Code: 0, Reason: ReasonPoweroff}, false
	case rebootSig && ws.Signal() == unix.SIGHUP && !how.stopping:
		return ExitStatus{}, true
	case rebootSig:
		return ExitStatus{Code: 0, Reason: ReasonPoweroff}, false
	case ws.Signaled():
		return ExitStatus{Code: 128 + int(ws.Signal()), Reason: ReasonCrashed,
			Error: "PID 1 died of " + unix.SignalName(ws.Signal())}, false
	}
	return ExitStatus{Code: 1, Reason: ReasonCrashed, Error: fmt.Sprintf("wait status %#x", uint32(ws))}, false
}

// poweroff asks PID 1 to power off; with deadline, whatever is left after the
// stop timeout is killed.
func (s *supervisor) poweroff(deadline bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leader == nil {
		return errors.New("poweroff: the machine has not started yet")
	}
	s.stopping = true
	if err := signalInit(s.leader, s.poweroffSignalLocked(), s.state.BootedAt); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("poweroff: %w", err)
	}
	go s.setState(func(st *State) {
		if st.Phase != PhaseExited {
			st.Phase = PhaseStopping
		}
	})
	if deadline && s.killTimer == nil {
		path := s.state.CgroupPath
		s.killTimer = time.AfterFunc(s.cfg.StopTimeout, func() {
			s.log.Warn("stop timeout: killing the machine", "timeout", s.cfg.StopTimeout)
			s.mu.Lock()
			s.killedByUs = true
			s.mu.Unlock()
			s.killAll(path)
		})
	}
	return nil
}

func (s *supervisor) poweroffSignalLocked() unix.Signal {
	if s.cfg.PoweroffSignal > 0 {
		return unix.Signal(s.cfg.PoweroffSignal)
	}
	switch s.kind {
	case "busybox":
		return unix.SIGUSR2
	case "app":
		return unix.SIGTERM
	}
	return sigRTMin3
}

func (s *supervisor) reboot() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leader == nil {
		return errors.New("reboot: the machine has not started yet")
	}
	if s.kind == "app" {
		return errors.New("reboot: an application machine cannot reboot; stop and start it")
	}
	return signalInit(s.leader, unix.SIGINT, s.state.BootedAt)
}

// signalInit sends sig to a machine's PID 1 once that process can receive it.
// The kernel discards a signal that the init of a PID namespace neither
// handles nor blocks; an init exec'd a moment ago (busybox's sets up its
// signals a little after it starts) would lose a poweroff asked for then, and
// the machine would never stop. So during the first initSettle after the exec,
// while PID 1 shows no handler or block for sig (/proc/PID/status), the signal
// waits in the background. Later it is sent at once: by then the init is set
// up (and one that waits in sigtimedwait shows neither, yet takes the signal).
func signalInit(p *os.Process, sig unix.Signal, booted time.Time) error {
	settled := booted.Add(initSettle)
	if time.Now().After(settled) || initTakes(p.Pid, sig) {
		return p.Signal(sig)
	}
	go func() {
		for !initTakes(p.Pid, sig) && time.Now().Before(settled) {
			time.Sleep(10 * time.Millisecond)
		}
		_ = p.Signal(sig)
	}()
	return nil
}

// initSettle is how long after its exec an init may take to set up its signals.
const initSettle = 2 * time.Second

// initTakes reports whether pid has a handler for sig or blocks it (then the
// kernel queues it), from /proc/PID/status. An unreadable status counts as yes:
// the process is gone or the kernel will not tell, and sending is all we can do.
func initTakes(pid int, sig unix.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
	bit := uint64(1) << (uint(sig) - 1)
	for _, line := range strings.Split(string(b), "\n") {
		for _, key := range []string{"SigCgt:", "SigBlk:"} {
			if v, ok := strings.CutPrefix(line, key); ok {
				if mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && mask&bit != 0 {
					return true
				}
			}
		}
	}
	return false
}

func (s *supervisor) kill(sig unix.Signal, whom string) error {
	if sig <= 0 || sig > 64 {
		return fmt.Errorf("kill: bad signal %d", sig)
	}
	if whom != "" && whom != "leader" && whom != "all" {
		return fmt.Errorf("kill: whom %q: want \"leader\" or \"all\"", whom)
	}
	s.mu.Lock()
	leader, path := s.leader, s.state.CgroupPath
	// Recorded before sending: PID 1 may be gone before Signal returns.
	s.requested |= 1 << (uint(sig) - 1)
	s.mu.Unlock()
	if leader == nil {
		return errors.New("kill: the machine has not started yet")
	}
	if whom == "all" {
		for _, h := range s.hs {
			for _, pid := range pidsIn(h.dir(filepath.Join(path, "payload"))) {
				if pid != os.Getpid() {
					_ = unix.Kill(pid, sig)
				}
			}
			break
		}
		return nil
	}
	return leader.Signal(sig)
}

func (s *supervisor) update(r Resources) error {
	s.mu.Lock()
	path := s.state.CgroupPath
	s.mu.Unlock()
	if err := s.driver.Update(context.Background(), s.cfg.Name, path, r); err != nil {
		return err
	}
	if err := mirrorThrottles(s.hs, path); err != nil {
		return fmt.Errorf("machine %q: %w", s.cfg.Name, err)
	}
	s.mu.Lock()
	s.cfg.Resources = r
	s.mu.Unlock()
	return nil
}

// killAll kills every process of the payload: cgroup.kill where the unified
// hierarchy has it, SIGKILL to PID 1 (which ends the PID namespace), and
// SIGKILL to whatever a v1 hierarchy still lists.
func (s *supervisor) killAll(path string) {
	s.mu.Lock()
	leader := s.leader
	s.mu.Unlock()
	if leader != nil {
		_ = leader.Kill()
	}
	for _, h := range s.hs {
		dir := h.dir(filepath.Join(path, "payload"))
		if h.Unified {
			_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
		}
		for _, pid := range pidsIn(dir) {
			// Never this process: a thread of it may sit in a payload cgroup
			// for a moment (Enter), and v1 lists the whole process then.
			if pid != os.Getpid() {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
}

// killPayload makes sure nothing of the payload is left (PID 1's death ends
// the PID namespace, but processes entered from outside may linger briefly)
// and waits, up to five seconds, for the payload cgroup to empty.
func (s *supervisor) killPayload(path string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := payloadProcs(s.hs, filepath.Join(path, "payload"))
		if n == 0 || time.Now().After(deadline) {
			if n > 0 {
				s.log.Warn("payload processes are left after kill", "count", n)
			}
			break
		}
		s.killAll(path)
		time.Sleep(5 * time.Millisecond)
	}
	s.mu.Lock()
	s.leader = nil
	s.mu.Unlock()
}

// payloadProcs says how many processes are left in the payload cgroup dir
// (relative to each hierarchy) and below it. Every process is in one cgroup
// of every hierarchy, and the guest, whose cgroup namespace starts at
// payload, cannot leave it; so where there is a cgroup2 hierarchy its
// cgroup.events answers for the whole tree in one read ("populated 0": none
// left, then 0 is returned; else the count there). Without one, each v1
// hierarchy's tree is walked.
func payloadProcs(hs []hierarchy, dir string) int {
	for _, h := range hs {
		if !h.Unified {
			continue
		}
		b, err := os.ReadFile(filepath.Join(h.dir(dir), "cgroup.events"))
		if err != nil {
			break // not there (yet): count the slow way
		}
		if strings.Contains(string(b), "populated 0") {
			return 0
		}
		n, _ := countProcs(h.dir(dir))
		return max(n, 1)
	}
	n := 0
	for _, h := range hs {
		c, _ := countProcs(h.dir(dir))
		n += c
	}
	return n
}

// cleanPayloadCgroup removes the cgroups the guest made below payload, before
// a reboot starts it again.
func (s *supervisor) cleanPayloadCgroup(path string) error {
	for _, h := range s.hs {
		dir := h.dir(filepath.Join(path, "payload"))
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.IsDir() {
				if err := removeCgroupTree(filepath.Join(dir, e.Name())); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
