package container

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// serveExec runs an exec request on a control connection: it starts the
// command in the machine, hands the caller its ends of the command's pty or
// pipes, passes on the caller's signals, and sends the exit code when the
// command has ended. The caller going away kills the command's process group.
//
// login, when not "", is what a login request runs (execReply.Login).
func (s *supervisor) serveExec(conn net.Conn, opts *EnterOptions, login string) {
	uc, _ := conn.(*net.UnixConn)
	fail := func(err error) {
		writeLine(conn, execReply{Error: err.Error()})
	}
	if opts == nil || uc == nil {
		fail(errors.New("exec: no command"))
		return
	}
	s.mu.Lock()
	leader := s.leader
	s.mu.Unlock()
	if leader == nil {
		fail(fmt.Errorf("machine %q has not started yet", s.cfg.Name))
		return
	}
	st, err := startEntered(enterTarget{pid: leader.Pid, users: s.cfg.Users, seccomp: s.seccomp}, *opts)
	if err != nil {
		fail(fmt.Errorf("enter machine %q: %w", s.cfg.Name, err))
		return
	}
	fds := make([]int, len(st.caller))
	for i, f := range st.caller {
		fds[i] = int(f.Fd())
	}
	b, _ := json.Marshal(execReply{OK: true, Streams: st.names, Login: login})
	_, _, err = uc.WriteMsgUnix(append(b, '\n'), unix.UnixRights(fds...), nil)
	for _, f := range st.caller {
		f.Close()
	}
	pid := st.proc.Pid
	if err != nil {
		_ = unix.Kill(-pid, unix.SIGKILL)
		_, _ = st.proc.Wait()
		return
	}
	ended := make(chan struct{})
	go func() {
		// The caller's signals for the command; its end (EOF) kills the
		// command's process group, as a closed terminal would.
		dec := json.NewDecoder(bufio.NewReader(conn))
		for {
			var ev execEvent
			if err := dec.Decode(&ev); err != nil {
				select {
				case <-ended:
				default:
					_ = unix.Kill(-pid, unix.SIGKILL)
				}
				return
			}
			if ev.Signal > 0 && ev.Signal <= 64 {
				_ = unix.Kill(pid, unix.Signal(ev.Signal))
			}
		}
	}()
	ps, _ := st.proc.Wait()
	close(ended)
	code := exitCode(ps)
	writeLine(conn, execEvent{Exit: &code})
}

// exitCode is a command's exit code as a shell gives it: 128+N when signal
// N ended it, -1 when unknown.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	ws := ps.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// writeLine sends v as one JSON line, giving up after 5 s on a caller that
// does not read.
func writeLine(conn net.Conn, v any) {
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = json.NewEncoder(conn).Encode(v)
	_ = conn.SetWriteDeadline(time.Time{})
}

// entered is a command started in the machine: the caller's ends of its
// streams, named.
type entered struct {
	proc   *os.Process
	caller []*os.File
	names  []string
}

// enterTarget is the machine a command is entered into.
type enterTarget struct {
	pid     int                  // its PID 1, on the host
	users   *Users               // its user namespace; nil: the host's
	seccomp []bpf.RawInstruction // its system call filter; nil: none
}

// startEntered starts a command in the machine t: in PID 1's cgroups and
// namespaces, as the machine's root, with PID 1's bounding set and the
// machine's filter, on a new pty or pipes. Everything is prepared here,
// through a pidfd of PID 1 (which cannot race a reused PID) and PID 1's root
// (/proc/PID/root, so the machine's files are read as the guest sees them);
// the raw fork (rawfork_linux.go) only applies it.
func startEntered(t enterTarget, opts EnterOptions) (*entered, error) {
	pidfd, err := unix.PidfdOpen(t.pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd of PID 1: %w", err)
	}
	defer unix.Close(pidfd)
	root, err := openRootOf(t.pid)
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	s, err := prepareFork(pidfd, t)
	defer s.release()
	if err != nil {
		return nil, err
	}
	// What was read through /proc/PID was PID 1's if it still lives now.
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		return nil, fmt.Errorf("PID 1 is gone: %w", err)
	}
	cmd, err := resolveCommand(root, opts)
	if err != nil {
		return nil, err
	}
	e, stdio, err := newStreams(root, opts, t.users)
	if err != nil {
		return nil, err
	}
	err = s.setCommand(cmd, stdio, opts.TTY)
	var pid int
	if err == nil {
		pid, err = s.start()
	}
	for _, f := range stdio {
		f.Close() // the command has its own copies now
	}
	if err != nil {
		for _, f := range e.caller {
			f.Close()
		}
		return nil, fmt.Errorf("start %s: %w", cmd.argv[0], err)
	}
	e.proc, err = os.FindProcess(pid)
	return e, err
}

// prepareFork fills in what the raw fork needs of the machine: its
// namespaces, cgroup files, bounding set and filter. The spec is never nil:
// release it whatever the error.
func prepareFork(pidfd int, t enterTarget) (*forkSpec, error) {
	s := &forkSpec{pidfd: uintptr(pidfd), zero: [1]byte{'0'}, sigAll: ^uint64(0), filter: sockFprog(t.seccomp)}
	s.nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP
	own, err := ownUserns(t.pid)
	switch {
	case err != nil:
		return s, err
	case own != (t.users != nil):
		return s, fmt.Errorf("PID 1 in a user namespace of its own: %v, configured: %v", own, t.users != nil)
	case own:
		s.nsFlags |= unix.CLONE_NEWUSER
		s.userns = true
	}
	if s.keep, err = readCapBnd(t.pid); err != nil {
		return s, err
	}
	return s, s.openCgroups(t.pid)
}

// openCgroups opens what puts the first fork into PID 1's cgroups: the
// cgroup2 directory, for clone3(CLONE_INTO_CGROUP), and "tasks" in each v1
// hierarchy. Both are cheap: a fork into a cgroup and a single thread's move
// ("0" to "tasks", and the intermediate is single-threaded: all of it) skip
// the kernel's global thread-group lock, whose write side, taken by a write
// to cgroup.procs, can wait for an RCU grace period (measured: 1 ms and
// more per enter here). And both happen while the process is still in the
// host's cgroup namespace, as the host's root.
func (s *forkSpec) openCgroups(pid int) error {
	v1, v2, err := cgroupsOf(pid)
	if err != nil {
		return err
	}
	if v2 != "" {
		fd, err := unix.Open(v2, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("join cgroup: %w", &os.PathError{Op: "open", Path: v2, Err: err})
		}
		s.clone = cloneArgs{flags: unix.CLONE_INTO_CGROUP, exitSignal: uint64(unix.SIGCHLD), cgroup: uint64(fd)}
	}
	for _, p := range v1 {
		fd, err := unix.Open(filepath.Join(p, "tasks"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("join cgroup: %w", &os.PathError{Op: "open", Path: p, Err: err})
		}
		s.cgroups, s.cgroupPaths = append(s.cgroups, uintptr(fd)), append(s.cgroupPaths, p)
	}
	return nil
}

// setCommand fills in the command and its fds 0, 1 and 2. A file whose fd
// is below 3 is given a copy above 2 first, so that putting one in place
// never overwrites another.
func (s *forkSpec) setCommand(cmd command, stdio [3]*os.File, ctty bool) error {
	var err error
	if s.path, err = syscall.BytePtrFromString(cmd.path); err != nil {
		return err
	}
	if s.dir, err = syscall.BytePtrFromString(cmd.dir); err != nil {
		return err
	}
	if s.argv, err = syscall.SlicePtrFromStrings(cmd.argv); err != nil {
		return err
	}
	if s.envv, err = syscall.SlicePtrFromStrings(cmd.env); err != nil {
		return err
	}
	s.pathName, s.dirName, s.ctty = cmd.path, cmd.dir, ctty
	for i, f := range stdio {
		fd := int(f.Fd())
		if fd < 3 {
			if fd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3); err != nil {
				return err
			}
			s.raised = append(s.raised, fd)
		}
		s.stdio[i] = uintptr(fd)
	}
	return nil
}

// release closes what the spec holds open: the cgroups and the copies
// of fds setCommand made.
func (s *forkSpec) release() {
	for _, fd := range s.cgroups {
		unix.Close(int(fd))
	}
	if s.clone.flags&unix.CLONE_INTO_CGROUP != 0 {
		unix.Close(int(s.clone.cgroup))
	}
	s.clone = cloneArgs{}
	for _, fd := range s.raised {
		unix.Close(fd)
	}
	s.cgroups, s.raised = nil, nil
}

// ownUserns reports whether pid is in another user namespace than this
// process.
func ownUserns(pid int) (bool, error) {
	var self, other unix.Stat_t
	if err := unix.Stat("/proc/self/ns/user", &self); err != nil {
		return false, err
	}
	if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/user", &other); err != nil {
		return false, fmt.Errorf("user namespace of PID 1: %w", err)
	}
	return self.Dev != other.Dev || self.Ino != other.Ino, nil
}

// cgroupsOf returns the host paths of process pid's cgroups: one per v1
// hierarchy, and its cgroup2 cgroup ("" without cgroup2).
func cgroupsOf(pid int) (v1 []string, v2 string, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil, "", err
	}
	hs, err := hierarchies()
	if err != nil {
		return nil, "", err
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, h := range hs {
			if h.Unified && parts[0] == "0" && parts[1] == "" {
				v2 = h.dir(parts[2])
			} else if !h.Unified && strings.Join(h.Controllers, ",") == parts[1] {
				v1 = append(v1, h.dir(parts[2]))
			}
		}
	}
	return v1, v2, nil
}

// readCapBnd is the bounding set of process pid.
func readCapBnd(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapBnd in /proc/PID/status")
}

// newStreams makes the command's fds 0, 1 and 2: a pty in the machine's own
// devpts, or pipes (stdout and stderr one pipe with MergeStderr). Only these:
// the caller's files, a terminal among them, never reach the guest (TIOCSTI
// into the caller's shell, an inherited pipe). It returns the caller's ends
// in e and the command's, to close once it has them.
func newStreams(root int, opts EnterOptions, users *Users) (e *entered, stdio [3]*os.File, err error) {
	e = &entered{}
	if opts.TTY {
		master, slave, err := openPty(root, opts.Rows, opts.Cols, users)
		if err != nil {
			return nil, stdio, err
		}
		e.caller, e.names = []*os.File{master}, []string{"pty"}
		return e, [3]*os.File{slave, slave, slave}, nil
	}
	n := 3
	if opts.MergeStderr {
		n = 2
	}
	for i := 0; i < n; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			for _, f := range append(e.caller, stdio[:i]...) {
				f.Close()
			}
			return nil, [3]*os.File{}, err
		}
		if i == 0 {
			stdio[0], e.caller = r, append(e.caller, w)
		} else {
			stdio[i], e.caller = w, append(e.caller, r)
		}
	}
	e.names = []string{"stdin", "stdout", "stderr"}[:n]
	if n == 2 {
		stdio[2] = stdio[1]
	}
	return e, stdio, nil
}
