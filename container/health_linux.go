package container

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// runHealth runs the machine's health check every Interval until stop is
// closed, recording each outcome in state.json. The supervisor runs it, not
// berthd: it lives as long as the machine, so a restart of berthd neither
// pauses the checks nor loses their history. Once the machine turns
// unhealthy with KillUnhealthy, it is killed with reason ReasonUnhealthy.
func (s *supervisor) runHealth(stop <-chan struct{}, path string, started time.Time) {
	hc := *s.cfg.HealthCheck
	h := Health{Status: HealthStarting}
	s.setState(func(st *State) { c := h; st.Health = &c })
	t := time.NewTimer(hc.Interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		began := time.Now()
		code, out, err := s.checkOnce(hc, stop)
		select {
		case <-stop:
			return // the machine ended under the check: its failure means nothing
		default:
		}
		prev := h.Status
		h = nextHealth(h, hc, err == nil && code == 0, time.Since(started) < hc.StartPeriod)
		h.LastCheck, h.LastDuration = began.UTC(), time.Since(began).Round(time.Millisecond).String()
		h.LastExitCode, h.LastOutput, h.LastError = code, cleanGuestText(out, maxHealthOutput), ""
		if err != nil {
			h.LastError = err.Error()
		}
		s.setState(func(st *State) { c := h; st.Health = &c })
		if h.Status != prev {
			s.log.Info("health changed", "health", h.Status, "failures", h.FailingStreak, "code", code, "err", h.LastError)
		}
		if h.Status == HealthUnhealthy && hc.KillUnhealthy {
			s.endFor(path, ExitStatus{Code: 1, Reason: ReasonUnhealthy,
				Error: fmt.Sprintf("the health check failed %d times in a row; last: %s", h.FailingStreak, healthFailure(h))})
			return
		}
		if hc.Interval >= trimAfterChecks {
			// Between checks the supervisor idles again: the check's heap and
			// the binary's pages it faulted in are not kept charged to it.
			trimMemory()
		}
		t.Reset(hc.Interval)
	}
}

// trimAfterChecks is the shortest interval after whose checks the supervisor
// trims its memory (trimMemory reads its smaps: a few milliseconds, worth it
// only between checks that are far apart).
const trimAfterChecks = 5 * time.Second

// healthFailure says in a few words how the last check failed.
func healthFailure(h Health) string {
	if h.LastError != "" {
		return h.LastError
	}
	msg := fmt.Sprintf("exit code %d", h.LastExitCode)
	if h.LastOutput != "" {
		line := h.LastOutput[strings.LastIndexByte(h.LastOutput, '\n')+1:]
		msg += ": " + line
	}
	return msg
}

// checkOnce runs the health check command once in the machine (its
// namespaces, cgroups, bounding set and filter, as berth shell), with no
// stdin and stdout and stderr on one pipe, and kills its whole session when
// Timeout passes. It returns the exit code and the end of the output.
func (s *supervisor) checkOnce(hc HealthCheck, stop <-chan struct{}) (int, []byte, error) {
	s.mu.Lock()
	leader := s.leader
	s.mu.Unlock()
	if leader == nil {
		return -1, nil, errors.New("the machine has no PID 1")
	}
	e, err := startEntered(enterTarget{pid: leader.Pid, users: s.cfg.Users, seccomp: s.seccomp},
		EnterOptions{Command: hc.Command, MergeStderr: true})
	if err != nil {
		return -1, nil, err
	}
	e.caller[0].Close() // stdin: at EOF
	outR := e.caller[1]
	out := make(chan []byte, 1)
	go func() { out <- readTail(outR, 4096) }()
	done := make(chan *os.ProcessState, 1)
	go func() {
		ps, _ := e.proc.Wait()
		done <- ps
	}()
	timer := time.NewTimer(hc.Timeout)
	defer timer.Stop()
	code := -1
	select {
	case ps := <-done:
		code = exitCode(ps)
	case <-timer.C:
		err = fmt.Errorf("timed out after %s", hc.Timeout)
	case <-stop:
		err = errors.New("the machine stopped")
	}
	if err != nil {
		// The command's session: it is its leader (the raw fork's setsid).
		_ = unix.Kill(-e.proc.Pid, unix.SIGKILL)
		<-done
	}
	// A process the command left behind may hold the pipe open: the
	// output is what arrived by now.
	var b []byte
	select {
	case b = <-out:
	case <-time.After(100 * time.Millisecond):
		outR.Close()
		b = <-out
	}
	outR.Close()
	return code, b, err
}

// readTail reads r to its end (or an error) and returns its last limit bytes.
func readTail(r *os.File, limit int) []byte {
	var tail []byte
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		tail = append(tail, buf[:n]...)
		if len(tail) > limit {
			tail = append(tail[:0], tail[len(tail)-limit:]...)
		}
		if err != nil {
			return tail
		}
	}
}

// endFor kills the payload for a reason of the supervisor's own (a failed
// health check, no READY=1 in time): its exit is recorded as st.
func (s *supervisor) endFor(path string, st ExitStatus) {
	s.mu.Lock()
	if s.stopping || s.endStatus != nil {
		s.mu.Unlock()
		return
	}
	s.stopping, s.killedByUs, s.endStatus = true, true, &st
	s.mu.Unlock()
	s.log.Warn("killing the machine", "reason", st.Reason, "err", st.Error)
	s.killAll(path)
}

// startWatchers starts what watches a booted payload besides its exit: the
// readiness timeout and the health check. The returned function stops them
// and returns once they are gone.
func (s *supervisor) startWatchers(path string) func() {
	cfg := s.cfg
	var timer *time.Timer
	s.mu.Lock()
	app := s.kind == "app"
	s.mu.Unlock()
	if app && cfg.Readiness == ReadinessNotify && cfg.ReadyTimeout > 0 {
		timer = time.AfterFunc(cfg.ReadyTimeout, func() {
			s.mu.Lock()
			booting := s.state.Phase == PhaseBooting
			s.mu.Unlock()
			if booting {
				s.endFor(path, ExitStatus{Code: 1, Reason: ReasonNotReady,
					Error: fmt.Sprintf("no READY=1 on $NOTIFY_SOCKET within %s (readiness.timeout)", cfg.ReadyTimeout)})
			}
		})
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	if cfg.HealthCheck != nil && len(cfg.HealthCheck.Command) > 0 {
		go func() {
			defer close(done)
			s.runHealth(stop, path, time.Now())
		}()
	} else {
		close(done)
	}
	return func() {
		if timer != nil {
			timer.Stop()
		}
		close(stop)
		<-done
	}
}
