package container

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"time"

	"github.com/berthd/berth/internal/userns"

	"github.com/berthd/berth/internal/rundir"

	"github.com/berthd/berth/internal/revert"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

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
	cfg Config
	// exitedAt is when the last boot's init exited (the teardown's start).
	exitedAt time.Time
	hooks    Hooks
	log      *slog.Logger
	driver   CgroupDriver
	hs       []hierarchy
	console  *consoleHub
	term     *ConsoleIO
	// hostMnt is the host's mount namespace, for the supervisor's thread to
	// return to from the one it builds each boot's tree in (tree_linux.go);
	// -1 until it first leaves.
	hostMnt int
	// creds are the machine's credentials, read once (credentials_linux.go).
	creds []credential

	mu      sync.Mutex
	writeMu sync.Mutex // serialises state.json writes
	state   State
	// held: state.json is not written between the claim and the first
	// boot's init, whose write carries every change made meanwhile (each
	// write costs a file's creation and rename on the start path, and
	// nothing reads the details of a machine still starting).
	held       bool
	seccomp    []bpf.RawInstruction // the machine's filter, for processes entered later
	leader     *os.Process
	kind       string
	stopping   bool // a poweroff was asked for: the next exit is final
	killedByUs bool
	// requested holds (bit sig-1) every signal berth sent to the payload on
	// request (kill): PID 1 dying of one of them was killed, not crashed.
	requested uint64
	killTimer *time.Timer
	// endStatus is set when the supervisor itself ended the payload (endFor):
	// how its exit is recorded.
	endStatus *ExitStatus

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
	// A supervisor in a process that was not started as a stage (berth boot)
	// takes no more heap samples either (see stageGODEBUG).
	runtime.MemProfileRate = 0
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
		hostMnt: -1,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("machine", cfg.Name)
	if s.driver == nil {
		s.driver = CgroupfsDriver{}
	}
	// The payload is started with Pdeathsig, which the kernel ties to the
	// thread that forked it, and each boot's tree is built in a mount
	// namespace of that thread's own: the machine is run by a goroutine
	// locked to a thread of its own that never goes back to the scheduler
	// (the runtime ends it with the goroutine), so no other goroutine ever
	// runs in that thread's namespaces or filesystem context.
	type result struct {
		st  ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		st, err := s.run(ctx)
		done <- result{st, err}
	}()
	r := <-done
	return r.st, r.err
}

// holdState holds state.json's writes back (see held) or lets them go on;
// the next change written carries the ones held.
func (s *supervisor) holdState(hold bool) {
	s.mu.Lock()
	s.held = hold
	s.mu.Unlock()
}

func (s *supervisor) snapshot() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// setState changes the state under the lock and writes state.json, unless
// writes are held (holdState).
func (s *supervisor) setState(f func(*State)) {
	s.mu.Lock()
	before, _ := json.Marshal(s.state)
	f(&s.state)
	st := s.state
	after, _ := json.Marshal(st)
	held := s.held
	s.mu.Unlock()
	if held || bytes.Equal(before, after) {
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

// run is the machine's whole life in this supervisor: claim the runtime
// directory, set up (filter, cgroups, console, sockets), boot until the
// machine ends for good, and undo the setup on every path.
func (s *supervisor) run(ctx context.Context) (ExitStatus, error) {
	if err := s.claim(); err != nil {
		return s.failEarly(err)
	}
	// Every step of the setup registers its undo; finish runs them all, on
	// every path, once the payload is gone.
	cleanup := revert.New()
	finish := func(st ExitStatus) ExitStatus {
		s.mu.Lock()
		if s.killTimer != nil {
			s.killTimer.Stop()
		}
		s.mu.Unlock()
		s.holdState(false)
		s.setState(func(x *State) {
			x.Phase, x.Exit, x.ExitedAt, x.LeaderPID = PhaseExited, &st, time.Now().UTC(), 0
		})
		close(s.done)
		if s.hooks.Stopped != nil {
			s.hooks.Stopped(context.WithoutCancel(ctx), st)
		}
		cleanup.Fail()
		if !s.exitedAt.IsZero() {
			// What a stop costs after the guest's init has gone.
			s.log.Info("cleaned up", "after", time.Since(s.exitedAt).Round(time.Microsecond))
		}
		return st
	}
	fail := func(err error) (ExitStatus, error) {
		err = fmt.Errorf("machine %q: %w", s.cfg.Name, err)
		s.log.Error("start failed", "err", err)
		return finish(ExitStatus{Code: 1, Reason: ReasonFailed, Error: err.Error()}), err
	}
	if err := s.loadCredentials(); err != nil {
		return fail(err)
	}
	if u := s.cfg.Users; u != nil {
		if err := userns.KernelSupportsUserNamespaces(); err != nil {
			return fail(fmt.Errorf("private users: %w; set privateUsers: false to run its root as the host's root", err))
		}
		// systemd-nspawn -U's lock on the range, held for the machine's
		// life, so that neither picks the other's range.
		lock, err := userns.LockRange(u.Base)
		if err != nil {
			return fail(err)
		}
		cleanup.Add(lock.Release)
	}
	hs, err := hierarchies()
	if err != nil {
		return fail(err)
	}
	s.hs = hs
	cg := s.startCgroups(ctx)
	cleanup.Add(cg.undo)
	if err := s.setupFilter(); err != nil {
		return fail(err)
	}
	if err := s.setupConsole(cleanup); err != nil {
		return fail(err)
	}
	readyCh, err := s.setupSockets(cleanup)
	if err != nil {
		return fail(err)
	}
	// Before the first boot's tree is made: the tree's copy of the host's
	// namespace must hold it (bind_linux.go).
	undoPropagate, err := setupPropagate(s.cfg.Name)
	if err != nil {
		return fail(err)
	}
	cleanup.Add(undoPropagate)
	st, err := s.bootLoop(ctx, cg, readyCh)
	if err != nil {
		return fail(err)
	}
	return finish(st), nil
}

// claim takes the machine's runtime directory: made when missing, refused
// when another supervisor of the same machine still runs.
func (s *supervisor) claim() error {
	cfg := s.cfg
	if err := os.MkdirAll(cfg.RuntimeDir, 0o700); err != nil {
		return fmt.Errorf("machine %q: runtime directory: %w", cfg.Name, err)
	}
	if old, err := ReadState(cfg.RuntimeDir); err == nil && old.SupervisorAlive() && old.SupervisorPID != os.Getpid() {
		return fmt.Errorf("machine %q is already running (supervisor PID %d, %s)", cfg.Name, old.SupervisorPID, cfg.RuntimeDir)
	}
	start, _ := ProcessStartTime(os.Getpid())
	s.setState(func(st *State) {
		*st = State{Name: cfg.Name, UUID: cfg.UUID, SupervisorPID: os.Getpid(), SupervisorStart: start,
			Driver: s.driver.Name(), Phase: PhaseStarting, StartedAt: time.Now().UTC(), Users: cfg.Users}
	})
	s.holdState(true)
	return nil
}

// setupFilter builds the machine's system call filter, once: the init stage
// gets it with its config, and processes entered later get it too.
func (s *supervisor) setupFilter() error {
	caps, _ := capMask(s.cfg.CapAdd, s.cfg.CapDrop, s.cfg.NetworkMode == "private")
	filter, err := machineSeccomp(s.cfg, caps)
	if err != nil {
		return err
	}
	desc := "none (this kernel has no seccomp filters; security.seccomp: optional)"
	if filter != nil {
		s.seccomp, desc = filter.prog, filter.summary
	} else {
		s.log.Warn("starting without a system call filter (security.seccomp: optional)")
	}
	s.setState(func(st *State) { st.Seccomp = desc })
	return nil
}

// cgroupSetup is setupCgroups running beside the payload's start: the
// cgroups' making and the supervisor's move into its own take milliseconds
// (a v1 migration waits for an RCU grace period), and the init stage's start
// (a fork and exec, a Go runtime) and the tree need no cgroup. The first
// boot's init stage is placed by the setup right after the supervisor's move
// when it has started by then (offer): a migration soon after another waits
// for no further grace period.
type cgroupSetup struct {
	done chan struct{}
	r    *revert.Reverter
	path string
	err  error

	pid      chan int // offered by the first boot's startPayload
	placed   int      // the pid the setup placed, if any
	placeErr error
}

// startCgroups runs setupCgroups in a goroutine of its own.
func (s *supervisor) startCgroups(ctx context.Context) *cgroupSetup {
	c := &cgroupSetup{done: make(chan struct{}), r: revert.New(), pid: make(chan int, 1)}
	go func() {
		defer close(c.done)
		if c.path, c.err = s.setupCgroups(ctx, c.r); c.err != nil {
			return
		}
		select {
		case pid := <-c.pid:
			c.placed, c.placeErr = pid, s.placePayload(c.path, pid)
		default:
		}
	}()
	return c
}

// offer hands the setup the init stage to place, while it still runs.
func (c *cgroupSetup) offer(pid int) {
	select {
	case <-c.done:
	case c.pid <- pid:
	default:
	}
}

// wait returns the machine's cgroup path once the setup has ended.
func (c *cgroupSetup) wait() (string, error) {
	<-c.done
	return c.path, c.err
}

// place puts the init stage pid in the payload cgroups, unless the setup
// already has.
func (s *supervisor) place(c *cgroupSetup, pid int) error {
	path, err := c.wait()
	if err != nil {
		return err
	}
	if c.placed == pid {
		return c.placeErr
	}
	return s.placePayload(path, pid)
}

// undo waits for the setup to end and undoes what it did.
func (c *cgroupSetup) undo() {
	<-c.done
	c.r.Fail()
}

// setupCgroups makes the machine's cgroup through the driver, with its
// limits and device fence, and splits it into supervisor and payload.
func (s *supervisor) setupCgroups(ctx context.Context, cleanup *revert.Reverter) (string, error) {
	cfg := s.cfg
	hs := s.hs
	own, err := ownCgroups()
	if err != nil {
		return "", err
	}
	if s.driver.Name() != (CgroupfsDriver{}).Name() {
		pauseWarm() // the driver moves the supervisor (systemd: into the scope)
	}
	cg, err := s.driver.Create(ctx, CgroupMachine{Name: cfg.Name, UUID: cfg.UUID,
		Description: "berth machine " + cfg.Name, PID: os.Getpid(), Resources: cfg.Resources,
		Devices: DeviceRules(cfg.AllowTun)})
	if err != nil {
		return "", err
	}
	cleanup.Add(func() {
		endWarm()
		restoreCgroups(hs, own)
		s.log.Debug("left the machine's cgroup")
		if err := s.driver.Destroy(context.WithoutCancel(ctx), cfg.Name, cg.Path); err != nil {
			s.log.Warn("remove cgroup", "err", err)
		}
		s.log.Debug("cgroup removed")
	})
	s.log.Debug("cgroup made", "path", cg.Path, "driver", s.driver.Name(), "fence", cg.DeviceFence)
	s.setState(func(st *State) { st.CgroupPath = cg.Path })
	if err := s.splitCgroup(cg); err != nil {
		return "", err
	}
	return cg.Path, nil
}

// setupConsole opens the console log and the hub that serves the console to
// the log, the foreground terminal and attached clients (a pty console only).
func (s *supervisor) setupConsole(cleanup *revert.Reverter) error {
	if s.cfg.Console != "pty" {
		return nil
	}
	clog, err := openConsoleLog(s.cfg.ConsoleLog, s.cfg.ConsoleLogMax)
	if err != nil {
		return fmt.Errorf("console log: %w", err)
	}
	var out io.Writer
	var size func() (uint16, uint16)
	if s.term != nil {
		out, size = s.term.Out, s.term.Size
	}
	s.console = newConsoleHub(clog, out, size)
	cleanup.Add(s.console.close)
	if s.term != nil && s.term.In != nil {
		s.console.termWrites = true
		go func() { _, _ = io.Copy(s.console, s.term.In) }()
	}
	if s.term != nil && s.term.Resized != nil {
		go func() {
			for range s.term.Resized {
				s.console.resize()
			}
		}()
	}
	return nil
}

// setupSockets opens the notify socket (READY=1 arrives on the returned
// channel), the control socket and the root mount point.
func (s *supervisor) setupSockets(cleanup *revert.Reverter) (<-chan struct{}, error) {
	dir := s.cfg.RuntimeDir
	notify, err := listenNotify(dir)
	if err != nil {
		return nil, err
	}
	cleanup.Add(func() { notify.Close(); os.Remove(rundir.Dir(dir).NotifySocket()) })
	if u := s.cfg.Users; u != nil {
		// connect(2) needs write permission on the socket: the guest's
		// systemd is the machine's root.
		if err := os.Lchown(rundir.Dir(dir).NotifySocket(), int(u.Base), int(u.Base)); err != nil {
			return nil, fmt.Errorf("notify socket: %w", err)
		}
	}
	if s.cfg.Readiness == ReadinessNotify && s.cfg.User != nil && s.cfg.User.UID != 0 {
		// An application that runs as another user sends READY=1 too
		// (connect(2) needs write permission); whatever it sends is only
		// about this machine.
		if err := os.Chmod(rundir.Dir(dir).NotifySocket(), 0o666); err != nil {
			return nil, fmt.Errorf("notify socket: %w", err)
		}
	}
	readyCh := make(chan struct{}, 4)
	go s.readNotify(notify, readyCh)

	ctl, err := listenControl(dir)
	if err != nil {
		return nil, err
	}
	cleanup.Add(func() {
		close(s.closing)
		ctl.Close()
		os.Remove(rundir.Dir(dir).ControlSocket())
		waitTimeout(&s.conns, time.Second)
	})
	go s.serveControl(ctl)

	rootDir := rundir.Dir(dir).RootMount()
	if err := os.MkdirAll(rootDir, 0o755); err != nil {
		return nil, err
	}
	cleanup.Add(func() {
		os.Remove(rootDir)
		removeEmptyTree(rundir.Dir(dir).Layers())
		removeBindStages(rundir.Dir(dir))
	})
	return readyCh, nil
}

// bootLoop boots the payload until it ends for good: a reboot inside the
// guest starts it again, in the same cgroup, at most rebootLimit times within
// rebootWindow.
func (s *supervisor) bootLoop(ctx context.Context, cg *cgroupSetup, readyCh <-chan struct{}) (ExitStatus, error) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	defer signal.Stop(sigs)
	defer s.leaveM0()
	var reboots []time.Time
	for boot := 1; ; boot++ {
		exitCh, err := s.startPayload(ctx, cg, boot)
		path, cgErr := cg.wait()
		if cgErr != nil {
			return ExitStatus{}, cgErr
		}
		if err != nil {
			s.killPayload(path)
			return ExitStatus{}, err
		}
		stopWatchers := s.startWatchers(path)
		ws := s.waitPayload(ctx, exitCh, readyCh, sigs, path)
		s.exitedAt = time.Now()
		stopWatchers()
		s.log.Debug("payload exited", "status", ws.String())
		s.killPayload(path)
		if s.console != nil {
			s.console.retire()
		}
		st, reboot := s.classify(ws)
		if !reboot {
			s.log.Info("machine ended", "reason", st.Reason, "code", st.Code)
			return st, nil
		}
		now := time.Now()
		reboots = append(reboots, now)
		for len(reboots) > 0 && now.Sub(reboots[0]) > rebootWindow {
			reboots = reboots[1:]
		}
		if len(reboots) > rebootLimit {
			return ExitStatus{Code: 1, Reason: ReasonRebootLoop,
				Error: fmt.Sprintf("the guest rebooted %d times within %s", len(reboots), rebootWindow)}, nil
		}
		s.log.Info("guest rebooted; starting it again")
		if err := s.cleanPayloadCgroup(path); err != nil {
			return ExitStatus{}, err
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
