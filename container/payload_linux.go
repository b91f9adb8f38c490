package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// startPayload starts the payload's init stage, builds its tree, places it
// in its cgroups once cg has made them, runs the Network hook, releases it
// and waits until it has exec'd the guest's init. The init stage does
// nothing before it is released.
func (s *supervisor) startPayload(ctx context.Context, cg *cgroupSetup, boot int) (<-chan *os.ProcessState, error) {
	cfg := s.cfg
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sync socket: %w", err)
	}
	parent, child := os.NewFile(uintptr(fds[0]), "sync-parent"), os.NewFile(uintptr(fds[1]), "sync-child")
	defer parent.Close()
	cmd := s.initStageCmd(child)
	s.setState(func(st *State) { st.Phase, st.Boots, st.ReadyAt = PhaseStarting, boot, time.Time{} })
	// The init stage shares this thread's mount namespace, M0, until it is
	// released: the tree is built there.
	if err := s.enterM0(); err != nil {
		child.Close()
		return nil, err
	}
	// The init stage's resource limits are set from here (prlimit), right
	// after the start: see startOwnedBy for why in the same step.
	var limitErr error
	limits := func() {
		raiseFileLimit(cmd.Process.Pid)
		limitErr = applyRlimits(cmd.Process.Pid, cfg.Rlimits)
	}
	var owner uint32 // the host's root: no user namespace of its own
	if u := cfg.Users; u != nil {
		owner = u.Base
	}
	if err := startOwnedBy(owner, cmd, limits); err != nil {
		child.Close()
		s.leaveM0()
		return nil, fmt.Errorf("start payload: %w", execFailure(err))
	}
	child.Close()
	pid := cmd.Process.Pid
	exitCh := make(chan *os.ProcessState, 1)
	go func() {
		_ = cmd.Wait()
		exitCh <- cmd.ProcessState
	}()
	s.mu.Lock()
	s.leader, s.stopping, s.killedByUs, s.requested, s.endStatus = cmd.Process, false, false, 0, nil
	s.mu.Unlock()
	abort := func(err error) (<-chan *os.ProcessState, error) {
		_ = cmd.Process.Kill()
		<-exitCh
		s.leaveM0()
		return nil, err
	}
	s.log.Debug("payload process started", "pid", pid)
	cg.offer(pid)
	if limitErr != nil {
		return abort(fmt.Errorf("machine %q: %w", cfg.Name, limitErr))
	}
	root, err := s.buildTree(pid)
	if err != nil {
		return abort(fmt.Errorf("machine %q: %w", cfg.Name, err))
	}
	defer root.Close()
	if err := s.place(cg, pid); err != nil {
		return abort(err)
	}
	path := cg.path
	if s.hooks.Network != nil && cfg.NetworkMode == "private" {
		if err := s.hooks.Network(ctx, pid); err != nil {
			return abort(fmt.Errorf("network: %w", err))
		}
	}
	msg, _ := json.Marshal(initMessage{Config: cfg, Seccomp: s.seccomp})
	if err := unix.Sendmsg(int(parent.Fd()), msg, unix.UnixRights(int(root.Fd())), nil, 0); err != nil {
		return abort(fmt.Errorf("release payload: %w", err))
	}
	kind, err := s.readInitStage(parent, pid)
	if err != nil {
		return abort(err)
	}
	s.initExeced(pid, kind, boot)
	if s.hooks.Started != nil {
		if err := s.hooks.Started(ctx, Started{Name: cfg.Name, UUID: cfg.UUID, SupervisorPID: os.Getpid(),
			LeaderPID: pid, CgroupPath: path, Boots: boot}); err != nil {
			return abort(fmt.Errorf("started hook: %w", err))
		}
	}
	return exitCh, nil
}

// initStageCmd is the payload's first process: this binary again (from its
// read-only clone), in new namespaces, with the sync socket as fd 3. It has
// no mount namespace of its own yet (it unshares one once its tree is
// built), and, with Users, a user namespace whose root is the machine's
// range's first ID on the host.
func (s *supervisor) initStageCmd(sync *os.File) *exec.Cmd {
	flags := uintptr(unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC)
	if s.cfg.NetworkMode == "private" {
		flags |= unix.CLONE_NEWNET
	}
	attr := &syscall.SysProcAttr{Pdeathsig: unix.SIGKILL}
	if u := s.cfg.Users; u != nil {
		flags |= unix.CLONE_NEWUSER
		ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(u.Base), Size: int(u.Size)}}
		attr.UidMappings, attr.GidMappings = ids, ids
		// The guest's init sets its own groups; and without Credential the
		// process would run as the overflow user, with no capabilities.
		attr.GidMappingsEnableSetgroups = true
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	attr.Cloneflags = flags
	cmd := &exec.Cmd{
		Path: selfExe(),
		Args: []string{"berth-init " + s.cfg.Name},
		// containermaxprocs=0: the Go runtime (1.25+) would otherwise keep the
		// supervisor cgroup's CPU limit files open for as long as it runs,
		// host files the application-mode reaper would carry into the
		// machine (reachable as /proc/1/fd/N).
		Env:         stageRuntimeEnv([]string{stageEnv + "=" + initStage}, "containermaxprocs=0,updatemaxprocs=0"),
		ExtraFiles:  []*os.File{sync},
		SysProcAttr: attr,
	}
	if s.cfg.Console == "passthrough" {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	}
	return cmd
}

// initExeced records that PID 1 runs the guest's init of kind: booting
// until READY=1 for systemd and for an application with readiness notify,
// running at once for the others.
func (s *supervisor) initExeced(pid int, kind string, boot int) {
	phase := PhaseBooting
	if kind != "systemd" && !(kind == "app" && s.cfg.Readiness == ReadinessNotify) {
		phase = PhaseRunning
	}
	now := time.Now().UTC()
	s.mu.Lock()
	s.kind, s.held = kind, false
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
}

// readInitStage reads the init stage's messages until its socket closes on
// exec; it returns the kind of init exec'd.
func (s *supervisor) readInitStage(sock *os.File, pid int) (string, error) {
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
		case msg == "binds":
			if err := s.attachBinds(pid); err != nil {
				_, _ = unix.Write(fd, []byte("error: "+err.Error()))
				return "", err
			}
			if _, err := unix.Write(fd, []byte("binds attached")); err != nil {
				return "", fmt.Errorf("payload setup: %w", err)
			}
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
				endWarm() // the guest has booted: its own first moves are made
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

// guestNoFile is the open-files limit a machine's init starts with, as
// systemd-nspawn@.service gives its containers (LimitNOFILE=524288, soft
// 1024): a root in a user namespace cannot raise its hard limit itself, and
// the guest's systemd and dbus-daemon ask for more than a service's default.
var guestNoFile = unix.Rlimit{Cur: 1024, Max: 524288}

// raiseFileLimit gives the init stage guestNoFile's hard limit where the
// supervisor's own is lower; the soft limit stays what a process expects
// (select(2) breaks above 1024). A failure only costs the guest the higher
// limit (a supervisor without CAP_SYS_RESOURCE, as in some sandboxes, cannot
// raise it).
func raiseFileLimit(pid int) {
	var cur unix.Rlimit
	if unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &cur) != nil || cur.Max >= guestNoFile.Max {
		return
	}
	want := guestNoFile
	if cur.Cur > want.Cur {
		want.Cur = cur.Cur
	}
	_ = unix.Prlimit(pid, unix.RLIMIT_NOFILE, &want, nil) // EPERM without CAP_SYS_RESOURCE
}
