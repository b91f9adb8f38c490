package container

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// sigRTMin3 is SIGRTMIN+3 as glibc numbers it (glibc keeps 32 and 33), the
// signal systemd takes as "power off".
const sigRTMin3 = unix.Signal(34 + 3)

// A guest that reboots more often than this within rebootWindow is stopped.
const (
	rebootLimit  = 10
	rebootWindow = time.Minute
)

// ConsoleIO connects a foreground terminal to the console (`berth boot`): Out
// gets everything the guest prints, In is typed into the console, and Size
// gives the terminal's size for the console pty at each boot.
type ConsoleIO struct {
	In   io.Reader
	Out  io.Writer
	Size func() (rows, cols uint16)
	// Resized tells that the terminal's size changed (SIGWINCH): the console
	// pty takes the new Size.
	Resized <-chan struct{}
}

// supervisor is the state of one Supervise call.
type supervisor struct {
	cfg     Config
	hooks   Hooks
	log     *slog.Logger
	driver  CgroupDriver
	hs      []hierarchy
	console *consoleHub
	term    *ConsoleIO

	mu         sync.Mutex
	writeMu    sync.Mutex // serialises state.json writes
	state      State
	seccomp    []bpf.RawInstruction // the machine's filter, for processes entered later
	leader     *os.Process
	kind       string
	stopping   bool // a poweroff was asked for: the next exit is final
	killedByUs bool
	// requested holds (bit sig-1) every signal berth sent to the payload on
	// request (kill): PID 1 dying of one of them was killed, not crashed.
	requested uint64
	killTimer *time.Timer

	done    chan struct{} // closed when the exit status is known
	closing chan struct{} // closed when the supervisor is about to return
	conns   sync.WaitGroup
}

// Supervise runs the machine described by cfg in the calling process until it
// ends, and returns how it ended. A reboot inside the guest starts it again in
// the same supervisor (same cgroup, console log and runtime directory).
//
// SIGTERM and SIGINT to the calling process are a clean poweroff with the stop
// timeout, after which everything in the machine's cgroup is killed. Cancelling
// ctx kills the machine at once. The error is non-nil only when the machine
// could not be started (the ExitStatus then says "failed").
func Supervise(ctx context.Context, cfg Config, hooks Hooks) (ExitStatus, error) {
	return supervise(ctx, cfg, hooks, nil)
}

// SuperviseConsole is Supervise with a foreground terminal on the console (used
// by `berth boot`).
func SuperviseConsole(ctx context.Context, cfg Config, hooks Hooks, term ConsoleIO) (ExitStatus, error) {
	return supervise(ctx, cfg, hooks, &term)
}

func supervise(ctx context.Context, cfg Config, hooks Hooks, term *ConsoleIO) (ExitStatus, error) {
	// The payload is started with Pdeathsig, which the kernel ties to the
	// thread that forked it: keep this goroutine on one thread that lives as
	// long as the machine.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	cfg, err := cfg.withDefaults()
	if err != nil {
		return ExitStatus{Code: 1, Reason: ReasonFailed, Error: err.Error()}, err
	}
	// Files this process was handed without close-on-exec by whoever started
	// it (a shell's 3>file, a service manager's sockets) must not reach the
	// payload or anything entered into the machine.
	_ = unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	// The supervisor is host root: nothing without CAP_SYS_PTRACE attaches to
	// it, and neither do the processes it forks into the machine before they
	// exec.
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	s := &supervisor{
		cfg:     cfg,
		hooks:   hooks,
		log:     hooks.Logger,
		driver:  hooks.Cgroups,
		term:    term,
		done:    make(chan struct{}),
		closing: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("machine", cfg.Name)
	if s.driver == nil {
		s.driver = CgroupfsDriver{}
	}
	return s.run(ctx)
}

func (s *supervisor) snapshot() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// setState changes the state under the lock and writes state.json.
func (s *supervisor) setState(f func(*State)) {
	s.mu.Lock()
	before, _ := json.Marshal(s.state)
	f(&s.state)
	st := s.state
	after, _ := json.Marshal(st)
	s.mu.Unlock()
	if bytes.Equal(before, after) {
		return
	}
	// Writers take turns and each writes the latest state, so a slower
	// writer never puts an older state back.
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	st = s.state
	s.mu.Unlock()
	if err := writeState(s.cfg.RuntimeDir, st); err != nil {
		s.log.Warn("write state", "err", err)
	}
}

func (s *supervisor) run(ctx context.Context) (exit ExitStatus, err error) {
	cfg := s.cfg
	if err := os.MkdirAll(cfg.RuntimeDir, 0o700); err != nil {
		return s.failEarly(fmt.Errorf("machine %q: runtime directory: %w", cfg.Name, err))
	}
	if old, err := ReadState(cfg.RuntimeDir); err == nil && old.SupervisorAlive() && old.SupervisorPID != os.Getpid() {
		return s.failEarly(fmt.Errorf("machine %q is already running (supervisor PID %d, %s)", cfg.Name, old.SupervisorPID, cfg.RuntimeDir))
	}
	start, _ := ProcessStartTime(os.Getpid())
	s.setState(func(st *State) {
		*st = State{Name: cfg.Name, UUID: cfg.UUID, SupervisorPID: os.Getpid(), SupervisorStart: start,
			Driver: s.driver.Name(), Phase: PhaseStarting, StartedAt: time.Now().UTC()}
	})

	// From here on every step registers its undo; finish runs them all, on
	// every path, after the payload is gone.
	var undo []func()
	finish := func(st ExitStatus) ExitStatus {
		s.mu.Lock()
		if s.killTimer != nil {
			s.killTimer.Stop()
		}
		s.mu.Unlock()
		s.setState(func(x *State) {
			x.Phase, x.Exit, x.ExitedAt, x.LeaderPID = PhaseExited, &st, time.Now().UTC(), 0
		})
		s.log.Debug("state written")
		close(s.done)
		if s.hooks.Stopped != nil {
			s.hooks.Stopped(context.WithoutCancel(ctx), st)
		}
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		s.log.Debug("cleaned up")
		return st
	}
	fail := func(err error) (ExitStatus, error) {
		err = fmt.Errorf("machine %q: %w", cfg.Name, err)
		s.log.Error("start failed", "err", err)
		return finish(ExitStatus{Code: 1, Reason: ReasonFailed, Error: err.Error()}), err
	}

	caps, _ := capMask(cfg.CapAdd, cfg.CapDrop, cfg.NetworkMode == "private")
	filter, err := machineSeccomp(cfg, caps)
	if err != nil {
		return fail(err)
	}
	seccompState := "none (this kernel has no seccomp filters; security.seccomp: optional)"
	if filter != nil {
		s.seccomp, seccompState = filter.prog, filter.summary
	} else {
		s.log.Warn("starting without a system call filter (security.seccomp: optional)")
	}
	s.setState(func(st *State) { st.Seccomp = seccompState })

	hs, err := hierarchies()
	if err != nil {
		return fail(err)
	}
	s.hs = hs
	own, err := ownCgroups()
	if err != nil {
		return fail(err)
	}
	cg, err := s.driver.Create(ctx, CgroupMachine{Name: cfg.Name, UUID: cfg.UUID,
		Description: "berth machine " + cfg.Name, PID: os.Getpid(), Resources: cfg.Resources,
		Devices: DeviceRules(cfg.AllowTun)})
	if err != nil {
		return fail(err)
	}
	path := cg.Path
	undo = append(undo, func() {
		restoreCgroups(hs, own)
		s.log.Debug("back in the original cgroups")
		if err := s.driver.Destroy(context.WithoutCancel(ctx), cfg.Name, path); err != nil {
			s.log.Warn("remove cgroup", "err", err)
		}
		s.log.Debug("cgroup removed")
	})
	s.log.Debug("cgroup made", "path", path, "driver", s.driver.Name(), "fence", cg.DeviceFence)
	s.setState(func(st *State) { st.CgroupPath = path })
	if err := s.splitCgroup(cg); err != nil {
		return fail(err)
	}
	s.log.Debug("cgroup split")

	if cfg.Console == "pty" {
		clog, err := openConsoleLog(cfg.ConsoleLog, cfg.ConsoleLogMax)
		if err != nil {
			return fail(fmt.Errorf("console log: %w", err))
		}
		var out io.Writer
		var size func() (uint16, uint16)
		if s.term != nil {
			out, size = s.term.Out, s.term.Size
		}
		s.console = newConsoleHub(clog, out, size)
		undo = append(undo, s.console.close)
		if s.term != nil && s.term.In != nil {
			go func() { _, _ = io.Copy(s.console, s.term.In) }()
		}
		if s.term != nil && s.term.Resized != nil {
			go func() {
				for range s.term.Resized {
					s.console.resize()
				}
			}()
		}
	}

	notify, err := listenNotify(cfg.RuntimeDir)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() { notify.Close(); os.Remove(filepath.Join(cfg.RuntimeDir, notifySocket)) })
	readyCh := make(chan struct{}, 4)
	go s.readNotify(notify, readyCh)

	ctl, err := listenControl(cfg.RuntimeDir)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() {
		close(s.closing)
		ctl.Close()
		os.Remove(filepath.Join(cfg.RuntimeDir, controlSocket))
		waitTimeout(&s.conns, time.Second)
	})
	go s.serveControl(ctl)

	rootDir := filepath.Join(cfg.RuntimeDir, "root")
	if err := os.MkdirAll(rootDir, 0o755); err != nil {
		return fail(err)
	}
	undo = append(undo, func() { os.Remove(rootDir) })

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	defer signal.Stop(sigs)

	var reboots []time.Time
	for boot := 1; ; boot++ {
		exitCh, err := s.startPayload(ctx, path, boot)
		if err != nil {
			s.killPayload(path)
			return fail(err)
		}
		ws := s.waitPayload(ctx, exitCh, readyCh, sigs, path)
		s.log.Debug("payload exited", "status", ws.String())
		s.killPayload(path)
		s.log.Debug("payload cgroup empty")
		if s.console != nil {
			s.console.retire()
		}
		s.log.Debug("console drained")
		st, reboot := s.classify(ws)
		if !reboot {
			s.log.Info("machine ended", "reason", st.Reason, "code", st.Code)
			return finish(st), nil
		}
		now := time.Now()
		reboots = append(reboots, now)
		for len(reboots) > 0 && now.Sub(reboots[0]) > rebootWindow {
			reboots = reboots[1:]
		}
		if len(reboots) > rebootLimit {
			return finish(ExitStatus{Code: 1, Reason: ReasonRebootLoop,
				Error: fmt.Sprintf("the guest rebooted %d times within %s", len(reboots), rebootWindow)}), nil
		}
		s.log.Info("guest rebooted; starting it again")
		if err := s.cleanPayloadCgroup(path); err != nil {
			return fail(err)
		}
	}
}

// failEarly reports a failure before anything was set up.
func (s *supervisor) failEarly(err error) (ExitStatus, error) {
	close(s.done)
	close(s.closing)
	return ExitStatus{Code: 1, Reason: ReasonFailed, Error: err.Error()}, err
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	select {
	case <-c:
	case <-time.After(d):
	}
}

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
	if err := movePID(s.hs, filepath.Join(path, "supervisor"), os.Getpid()); err != nil {
		return err
	}
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

// startPayload starts the payload's init stage, places it, runs the Network
// hook, releases it and waits until it has exec'd the guest's init.
func (s *supervisor) startPayload(ctx context.Context, path string, boot int) (<-chan *os.ProcessState, error) {
	cfg := s.cfg
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sync socket: %w", err)
	}
	parent, child := os.NewFile(uintptr(fds[0]), "sync-parent"), os.NewFile(uintptr(fds[1]), "sync-child")
	defer parent.Close()

	flags := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC)
	if cfg.NetworkMode == "private" {
		flags |= unix.CLONE_NEWNET
	}
	cmd := &exec.Cmd{
		Path: selfExe(),
		Args: []string{"berth-init " + cfg.Name},
		// containermaxprocs=0: the Go runtime (1.25+) would otherwise keep the
		// supervisor cgroup's CPU limit files open for as long as it runs,
		// host files the application-mode reaper would carry into the
		// machine (reachable as /proc/1/fd/N).
		Env:        []string{stageEnv + "=" + initStage, "GODEBUG=containermaxprocs=0,updatemaxprocs=0"},
		ExtraFiles: []*os.File{child},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: flags,
			Pdeathsig:  unix.SIGKILL,
		},
	}
	if cfg.Console == "passthrough" {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	}
	s.setState(func(st *State) { st.Phase, st.Boots, st.ReadyAt = PhaseStarting, boot, time.Time{} })
	if err := cmd.Start(); err != nil {
		child.Close()
		return nil, fmt.Errorf("start payload: %w", err)
	}
	child.Close()
	pid := cmd.Process.Pid
	exitCh := make(chan *os.ProcessState, 1)
	go func() {
		_ = cmd.Wait()
		exitCh <- cmd.ProcessState
	}()
	s.mu.Lock()
	s.leader, s.stopping, s.killedByUs, s.requested = cmd.Process, false, false, 0
	s.mu.Unlock()
	abort := func(err error) (<-chan *os.ProcessState, error) {
		_ = cmd.Process.Kill()
		<-exitCh
		return nil, err
	}

	s.log.Debug("payload process started", "pid", pid)
	if err := movePID(s.hs, filepath.Join(path, "payload"), pid); err != nil {
		return abort(err)
	}
	s.log.Debug("payload placed in its cgroups")
	if s.hooks.Network != nil && cfg.NetworkMode == "private" {
		if err := s.hooks.Network(ctx, pid); err != nil {
			return abort(fmt.Errorf("network: %w", err))
		}
	}
	msg, _ := json.Marshal(initMessage{Config: cfg, Seccomp: s.seccomp})
	if _, err := parent.Write(msg); err != nil {
		return abort(fmt.Errorf("release payload: %w", err))
	}
	kind, err := s.readInitStage(parent)
	if err != nil {
		return abort(err)
	}
	s.log.Debug("init exec'd", "init", kind)
	phase := PhaseBooting
	if kind != "systemd" {
		// Only systemd speaks sd_notify: the others count as running once
		// exec'd.
		phase = PhaseRunning
	}
	now := time.Now().UTC()
	s.mu.Lock()
	s.kind = kind
	s.mu.Unlock()
	s.setState(func(st *State) {
		st.LeaderPID, st.Init, st.Phase, st.BootedAt = pid, kind, phase, now
		if phase == PhaseRunning {
			st.ReadyAt = now
		}
	})
	s.log.Info("payload started", "leader", pid, "init", kind, "boot", boot)
	if phase == PhaseRunning {
		trimMemory()
	}
	if s.hooks.Started != nil {
		if err := s.hooks.Started(ctx, Started{Name: cfg.Name, UUID: cfg.UUID, SupervisorPID: os.Getpid(),
			LeaderPID: pid, CgroupPath: path, Boots: boot}); err != nil {
			return abort(fmt.Errorf("started hook: %w", err))
		}
	}
	return exitCh, nil
}

// readInitStage reads the init stage's messages until its socket closes on
// exec; it returns the kind of init exec'd.
func (s *supervisor) readInitStage(sock *os.File) (string, error) {
	fd := int(sock.Fd())
	tv := unix.Timeval{Sec: 60}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 8192)
	oob := make([]byte, unix.CmsgSpace(4))
	kind := ""
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return "", fmt.Errorf("payload setup: %w", err)
		}
		msg := string(buf[:n])
		switch {
		case n == 0 && oobn == 0:
			if kind == "" {
				return "", errors.New("payload setup: the init stage ended without a word (see the supervisor's log)")
			}
			return kind, nil
		case msg == "console":
			cms, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil || len(cms) == 0 {
				return "", errors.New("payload setup: console message without a pty")
			}
			fds, err := unix.ParseUnixRights(&cms[0])
			if err != nil || len(fds) != 1 {
				return "", errors.New("payload setup: console message without a pty")
			}
			if s.console != nil {
				s.console.setMaster(os.NewFile(uintptr(fds[0]), "console"))
			} else {
				unix.Close(fds[0])
			}
		case strings.HasPrefix(msg, "exec "):
			kind = strings.TrimPrefix(msg, "exec ")
		case strings.HasPrefix(msg, "error: "):
			return "", errors.New(strings.TrimPrefix(msg, "error: "))
		}
	}
}

// waitPayload waits for the payload to exit, handling READY=1, signals to the
// supervisor and ctx meanwhile.
func (s *supervisor) waitPayload(ctx context.Context, exitCh <-chan *os.ProcessState, readyCh <-chan struct{}, sigs <-chan os.Signal, path string) *os.ProcessState {
	cancelled := ctx.Done()
	for {
		select {
		case ps := <-exitCh:
			return ps
		case <-readyCh:
			s.mu.Lock()
			stopping := s.stopping
			s.mu.Unlock()
			if !stopping {
				s.setState(func(st *State) {
					if st.Phase == PhaseBooting {
						st.Phase, st.ReadyAt = PhaseRunning, time.Now().UTC()
					}
				})
				notifyOwnManager("READY=1")
				trimMemory()
			}
		case sig := <-sigs:
			s.log.Debug("signal", "signal", sig.String())
			s.log.Info("signal to the supervisor: powering off", "signal", sig.String())
			_ = s.poweroff(true)
		case <-cancelled:
			cancelled = nil
			s.log.Info("cancelled: killing the machine")
			s.mu.Lock()
			s.stopping, s.killedByUs = true, true
			s.mu.Unlock()
			s.killAll(path)
		}
	}
}

// classify turns PID 1's end into an exit status, or a reboot. In a PID
// namespace, reboot(2) ends init with SIGHUP for a restart and SIGINT for a
// poweroff or halt.
func (s *supervisor) classify(ps *os.ProcessState) (ExitStatus, bool) {
	s.mu.Lock()
	killed, stopping, kind, requested := s.killedByUs, s.stopping, s.kind, s.requested
	s.mu.Unlock()
	ws, _ := ps.Sys().(syscall.WaitStatus)
	// A booted init ends with SIGHUP or SIGINT when the guest calls reboot(2):
	// those mean a reboot or a poweroff even when berth sent the same signal
	// on request (the init took it and rebooted or powered off).
	rebootSig := kind != "app" && ws.Signaled() && (ws.Signal() == unix.SIGHUP || ws.Signal() == unix.SIGINT)
	switch {
	case killed:
		return ExitStatus{Code: 128 + int(unix.SIGKILL), Reason: ReasonKilled}, false
	case ws.Signaled() && !rebootSig && requested&(1<<(uint(ws.Signal())-1)) != 0:
		return ExitStatus{Code: 128 + int(ws.Signal()), Reason: ReasonKilled,
			Error: "PID 1 died of " + unix.SignalName(ws.Signal()) + " sent on request"}, false
	case ws.Exited():
		if kind == "app" || ws.ExitStatus() != 0 {
			return ExitStatus{Code: ws.ExitStatus(), Reason: ReasonExited}, false
		}
		return ExitStatus{Code: 0, Reason: ReasonPoweroff}, false
	case ws.Signaled() && kind != "app" && ws.Signal() == unix.SIGHUP && !stopping:
		return ExitStatus{}, true
	case ws.Signaled() && kind != "app" && (ws.Signal() == unix.SIGINT || ws.Signal() == unix.SIGHUP):
		return ExitStatus{Code: 0, Reason: ReasonPoweroff}, false
	case ws.Signaled():
		return ExitStatus{Code: 128 + int(ws.Signal()), Reason: ReasonCrashed,
			Error: "PID 1 died of " + unix.SignalName(ws.Signal())}, false
	}
	return ExitStatus{Code: 1, Reason: ReasonCrashed, Error: ps.String()}, false
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
		n := 0
		for _, h := range s.hs {
			c, _ := countProcs(h.dir(filepath.Join(path, "payload")))
			n += c
		}
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

// listenNotify binds the sd_notify socket the guest sees as /run/host/notify.
func listenNotify(runDir string) (*net.UnixConn, error) {
	p := filepath.Join(runDir, notifySocket)
	_ = os.Remove(p)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	return c, nil
}

func (s *supervisor) readNotify(c *net.UnixConn, ready chan<- struct{}) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(buf[:n]))
		for sc.Scan() {
			switch sc.Text() {
			case "READY=1":
				select {
				case ready <- struct{}{}:
				default:
				}
			case "STOPPING=1":
				s.setState(func(st *State) {
					if st.Phase != PhaseExited {
						st.Phase = PhaseStopping
					}
				})
			}
		}
	}
}

// notifyOwnManager passes the guest's READY=1 on to whoever started the
// supervisor with $NOTIFY_SOCKET (a Type=notify unit, a benchmark), as
// nspawn's --notify-ready=yes does.
func notifyOwnManager(msg string) {
	p := os.Getenv("NOTIFY_SOCKET")
	if p == "" {
		return
	}
	if strings.HasPrefix(p, "@") {
		p = "\x00" + p[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	_, _ = c.Write([]byte(msg))
}
