package container

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// serveLogin runs a login request: a login prompt on a new pty of the
// machine's own devpts. A systemd guest gets its own getty on it, as
// `machinectl login` has systemd-machined do it (machine_start_getty in
// systemd's src/machine/machine-dbus.c): the pty is opened here and the
// guest's systemd is asked to start container-getty@N.service on
// /dev/pts/N. Other inits get `login` when the machine has it, else root's
// login shell, as an entered command (serveExec) on the pty.
func (s *supervisor) serveLogin(conn net.Conn, opts *EnterOptions) {
	uc, _ := conn.(*net.UnixConn)
	if opts == nil || uc == nil {
		writeLine(conn, execReply{Error: "login: no options"})
		return
	}
	s.mu.Lock()
	leader, kind := s.leader, s.kind
	s.mu.Unlock()
	if leader == nil {
		writeLine(conn, execReply{Error: fmt.Sprintf("machine %q has not started yet", s.cfg.Name)})
		return
	}
	o := EnterOptions{TTY: true, Rows: opts.Rows, Cols: opts.Cols, Env: opts.Env}
	if kind == "systemd" {
		s.serveGetty(uc, leader.Pid, o)
		return
	}
	how := LoginShell
	if root, err := openRootOf(leader.Pid); err == nil {
		if _, err := lookPathIn(root, "login", []string{"PATH=" + machinePath}); err == nil {
			o.Command, how = []string{"login"}, LoginProgram
		}
		unix.Close(root)
	}
	s.serveExec(conn, &o, how)
}

// serveGetty opens a pty in the machine whose PID 1 is pid, has the guest's
// systemd start a getty on it, hands the caller the pty's master and waits
// until the caller goes or the machine ends; then the getty is stopped.
//
// The getty is started with the guest's own systemctl, entered into the
// machine as root (the guest's, in its user namespace): systemctl talks to
// its systemd over systemd's own socket, so the guest needs no D-Bus daemon,
// and nothing of the guest's is spoken to from this host-root process.
// --no-block is what machined's StartUnit call does: the prompt appears when
// the guest gets to it (after its boot, container-getty@.service is ordered
// after systemd-user-sessions.service).
func (s *supervisor) serveGetty(conn *net.UnixConn, pid int, opts EnterOptions) {
	fail := func(err error) {
		writeLine(conn, execReply{Error: fmt.Sprintf("login to machine %q: %v", s.cfg.Name, err)})
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		fail(fmt.Errorf("pidfd of PID 1: %w", err))
		return
	}
	defer unix.Close(pidfd)
	root, err := openRootOf(pid)
	if err != nil {
		fail(err)
		return
	}
	master, slave, err := openPty(root, opts.Rows, opts.Cols, s.cfg.Users)
	unix.Close(root)
	if err != nil {
		fail(err)
		return
	}
	// The getty opens /dev/pts/N itself: no slave of ours stays open, so
	// that the caller sees the getty's hangups as machinectl login does.
	slave.Close()
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		master.Close()
		fail(fmt.Errorf("pty number: %w", err))
		return
	}
	unit := "container-getty@" + strconv.FormatUint(uint64(n), 10) + ".service"
	// restart, not start: a getty of this unit still active belongs to an
	// earlier pty of the same number, already gone (its session has not
	// ended yet, or it is restarting after the hangup): it must not get
	// this one's prompt or keep this pty's unit running after the session.
	if err := s.systemctl(pid, "restart", unit); err != nil {
		master.Close()
		fail(err)
		return
	}
	b, _ := json.Marshal(execReply{OK: true, Streams: []string{"pty"}, Login: LoginGetty, TTY: "/dev/pts/" + strconv.FormatUint(uint64(n), 10)})
	_, _, err = conn.WriteMsgUnix(append(b, '\n'), unix.UnixRights(int(master.Fd())), nil)
	master.Close()
	if err == nil {
		s.waitLogin(conn, pidfd)
	}
	// Stop it unless the machine is gone (Restart=always would start it
	// again after the hangup, until /dev/pts/N is gone).
	if unix.PidfdSendSignal(pidfd, 0, nil, 0) == nil {
		if err := s.systemctl(pid, "stop", unit); err != nil {
			s.log.Warn("login: stop the getty", "unit", unit, "err", err)
		}
	}
}

// systemctl runs `systemctl --no-block VERB UNIT` in the machine.
func (s *supervisor) systemctl(pid int, verb, unit string) error {
	out, code, err := s.runInMachine(pid, 30*time.Second, "systemctl", "--no-block", verb, unit)
	if err == nil && code != 0 {
		err = fmt.Errorf("exit code %d: %s", code, printable(out, 400))
	}
	if err != nil {
		return fmt.Errorf("systemctl %s %s in the machine: %w", verb, unit, err)
	}
	return nil
}

// printable is the guest's text s fit for a person's terminal: no control
// characters (a newline becomes a space), at most max characters.
func printable(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return ' '
		case r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return -1
		}
		return r
	}, strings.TrimSpace(s))
	if r := []rune(s); len(r) > max {
		s = string(r[:max]) + "…"
	}
	return s
}

// runInMachine runs argv in the machine whose PID 1 is pid, as berth shell
// does (on pipes, stdin empty), and returns its output (stdout and stderr,
// the first 64 KiB) and exit code. After timeout it is killed.
func (s *supervisor) runInMachine(pid int, timeout time.Duration, argv ...string) (string, int, error) {
	e, err := startEntered(enterTarget{pid: pid, users: s.cfg.Users, seccomp: s.seccomp}, EnterOptions{Command: argv, MergeStderr: true})
	if err != nil {
		return "", -1, err
	}
	e.caller[0].Close() // its stdin: nothing to read
	out := e.caller[1]
	kill := time.AfterFunc(timeout, func() { _ = unix.Kill(-e.proc.Pid, unix.SIGKILL) })
	defer kill.Stop()
	b, _ := io.ReadAll(io.LimitReader(out, 64<<10))
	out.Close()
	ps, _ := e.proc.Wait()
	return string(b), exitCode(ps), nil
}

// waitLogin returns when the caller closes conn, the machine's PID 1 (its
// pidfd) ends, or the supervisor ends.
func (s *supervisor) waitLogin(conn net.Conn, pidfd int) {
	gone := make(chan struct{}, 2)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// The caller sends nothing more: a read ends when it goes.
		_, _ = io.Copy(io.Discard, conn)
		gone <- struct{}{}
	}()
	go func() {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n, err := unix.Poll(fds, 500); err == nil && n > 0 {
				gone <- struct{}{}
				return
			}
		}
	}()
	select {
	case <-gone:
	case <-s.done:
	case <-s.closing:
	}
	_ = conn.SetReadDeadline(time.Now()) // ends the reader
}

// openRootOf opens process pid's root directory (O_PATH), to resolve the
// machine's paths in (openInRoot).
func openRootOf(pid int) (int, error) {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("root of PID 1: %w", err)
	}
	return fd, nil
}
