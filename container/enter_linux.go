package container

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
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
func (s *supervisor) serveExec(conn net.Conn, opts *EnterOptions) {
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
	st, err := s.startEntered(leader.Pid, *opts)
	if err != nil {
		fail(fmt.Errorf("enter machine %q: %w", s.cfg.Name, err))
		return
	}
	fds := make([]int, len(st.caller))
	for i, f := range st.caller {
		fds[i] = int(f.Fd())
	}
	b, _ := json.Marshal(execReply{OK: true, Streams: st.names})
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
	code := -1
	if ps != nil {
		ws := ps.Sys().(syscall.WaitStatus)
		code = ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	}
	writeLine(conn, execEvent{Exit: &code})
}

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

// startEntered starts a command in the machine whose PID 1 is leaderPID.
//
// Go runs many threads, and setns(CLONE_NEWNS) refuses a thread that shares
// its filesystem context (root, cwd) with others. So a goroutine locks itself
// to a fresh OS thread, unshares CLONE_FS on it, joins the machine's
// namespaces with one setns() on a pidfd of PID 1 (which also cannot race a
// reused PID), moves that one thread into PID 1's v1 cgroups ("tasks"), cuts
// its capabilities to the machine's bounding set and forks the command from
// that thread; the cgroup2 placement is atomic through
// clone3(CLONE_INTO_CGROUP). The thread is never handed back to the Go
// scheduler: the goroutine ends locked, and the runtime destroys it.
func (s *supervisor) startEntered(leaderPID int, opts EnterOptions) (*entered, error) {
	pidfd, err := unix.PidfdOpen(leaderPID, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pidfd)
	place, err := readProcCgroups(leaderPID)
	if err != nil {
		return nil, err
	}
	bnd, err := readCapBnd(leaderPID)
	if err != nil {
		return nil, err
	}
	type result struct {
		e   *entered
		err error
	}
	ch := make(chan result, 1)
	var enter func()
	enter = func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread is never destroyed (the runtime parks it for
			// good instead), so it must not be the one that changes: it
			// would stay in the machine's namespaces and cgroups. Hold it and
			// let a goroutine on another thread do the work.
			done := make(chan struct{})
			go func() { enter(); close(done) }()
			<-done
			runtime.UnlockOSThread()
			return
		}
		// No UnlockOSThread: this thread is about to be changed for good,
		// and the runtime destroys it when the goroutine ends.
		e, err := enterAndStart(pidfd, place, bnd, s.seccomp, opts)
		ch <- result{e, err}
	}
	go enter()
	r := <-ch
	return r.e, r.err
}

// procCgroups is where a process lives: v1 hierarchy mount → path, and the
// cgroup2 path.
type procCgroups struct {
	v1      map[string]string
	unified string
	hasV2   bool
}

func readProcCgroups(pid int) (procCgroups, error) {
	pc := procCgroups{v1: map[string]string{}}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return pc, err
	}
	hs, err := hierarchies()
	if err != nil {
		return pc, err
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, h := range hs {
			if h.Unified && parts[0] == "0" && parts[1] == "" {
				pc.unified, pc.hasV2 = h.dir(parts[2]), true
			} else if !h.Unified && strings.Join(h.Controllers, ",") == parts[1] {
				pc.v1[h.Mount] = h.dir(parts[2])
			}
		}
	}
	return pc, nil
}

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

// enterAndStart runs on a locked thread that it changes for good: it joins
// the machine and starts the command from there.
func enterAndStart(pidfd int, place procCgroups, bnd uint64, filter []bpf.RawInstruction, opts EnterOptions) (*entered, error) {
	// Open the cgroup2 directory while paths are still the host's.
	cgfd := -1
	if place.hasV2 {
		fd, err := unix.Open(place.unified, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			cgfd = fd
			defer unix.Close(fd)
		}
	}
	if err := joinMachine(pidfd, place, bnd, filter); err != nil {
		return nil, err
	}
	// From here on, paths are the machine's.
	return startCommand(opts, cgfd)
}

// joinMachine moves the calling thread into the machine: PID 1's v1 cgroups,
// its namespaces, its bounding set (and no more in the thread's own sets: the
// command is visible in the machine's PID namespace from its fork on, and
// holds no more than the machine's set from then, not only after its exec),
// and its system call filter, on this thread only: the command forked from it
// inherits it.
func joinMachine(pidfd int, place procCgroups, bnd uint64, filter []bpf.RawInstruction) error {
	tid := strconv.Itoa(unix.Gettid())
	for _, dir := range place.v1 {
		if err := os.WriteFile(filepath.Join(dir, "tasks"), []byte(tid), 0); err != nil {
			return fmt.Errorf("join cgroup %s: %w", dir, err)
		}
	}
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare fs: %w", err)
	}
	flags := unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP
	if err := unix.Setns(pidfd, flags); err != nil {
		return fmt.Errorf("join namespaces: %w", err)
	}
	if err := dropBoundingSet(bnd); err != nil {
		return err
	}
	if err := limitToBounding(bnd); err != nil {
		return err
	}
	return loadSeccomp(filter, false)
}

// startCommand starts the command from a thread in the machine, in PID 1's
// cgroup2 cgroup (cgfd, atomically through clone3), on a new pty or new
// pipes.
func startCommand(opts EnterOptions, cgfd int) (*entered, error) {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "container=berth"}
	term := "TERM=dumb"
	if opts.TTY {
		term = "TERM=xterm-256color"
	}
	env = append(append(env, term), opts.Env...)
	argv, dir := opts.Command, opts.Dir
	if len(argv) == 0 {
		// root's login shell, as the machine's own /etc/passwd says.
		argv = []string{loginShell(), "-l"}
		if dir == "" {
			dir = "/root"
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				dir = "/"
			}
		}
	}
	if dir == "" {
		dir = "/"
	}
	path, err := lookPathIn(argv[0], env)
	if err != nil {
		return nil, err
	}
	sys := &syscall.SysProcAttr{}
	if cgfd >= 0 {
		sys.UseCgroupFD, sys.CgroupFD = true, cgfd
	}
	attr := &os.ProcAttr{Dir: dir, Env: env, Sys: sys}
	e, child, err := newStreams(opts, attr)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, f := range child {
			f.Close()
		}
	}()
	// Whatever this process holds without close-on-exec (files `berth
	// boot`'s caller handed it, opened after the supervisor started) stays
	// out of the machine: only attr.Files become the command's 0, 1 and 2.
	_ = unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	p, err := os.StartProcess(path, argv, attr)
	if err != nil {
		for _, f := range e.caller {
			f.Close()
		}
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	e.proc = p
	return e, nil
}

// newStreams makes the command's fds 0, 1 and 2: a pty in the machine's own
// devpts, or pipes (stdout and stderr one pipe with MergeStderr). Only these:
// the caller's files, a terminal among them, never reach the guest (TIOCSTI
// into the caller's shell, an inherited pipe). It returns the caller's ends in
// e and the command's ends, to close once it has them.
func newStreams(opts EnterOptions, attr *os.ProcAttr) (e *entered, child []*os.File, err error) {
	e = &entered{}
	if opts.TTY {
		master, slave, err := openPtyHere(opts.Rows, opts.Cols)
		if err != nil {
			return nil, nil, err
		}
		e.caller, e.names = []*os.File{master}, []string{"pty"}
		attr.Files = []*os.File{slave, slave, slave}
		attr.Sys.Setsid, attr.Sys.Setctty, attr.Sys.Ctty = true, true, 0
		return e, []*os.File{slave}, nil
	}
	n := 3
	if opts.MergeStderr {
		n = 2
	}
	var ends [3][2]*os.File
	for i := 0; i < n; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			for _, f := range append(child, e.caller...) {
				f.Close()
			}
			return nil, nil, err
		}
		ends[i] = [2]*os.File{r, w}
		if i == 0 {
			child, e.caller = append(child, r), append(e.caller, w)
		} else {
			child, e.caller = append(child, w), append(e.caller, r)
		}
	}
	e.names = []string{"stdin", "stdout", "stderr"}[:n]
	attr.Files = []*os.File{ends[0][0], ends[1][1], ends[1][1]}
	if n == 3 {
		attr.Files[2] = ends[2][1]
	}
	attr.Sys.Setpgid = true
	return e, child, nil
}

// loginShell is root's shell in the machine, from its /etc/passwd, or
// /bin/sh. It runs after the thread has joined the machine's mount namespace:
// the guest's files are read as the guest sees them, never a host path a
// planted symlink points to.
func loginShell() string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return "/bin/sh"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) == 7 && fields[0] == "root" && strings.HasPrefix(fields[6], "/") {
			if st, err := os.Stat(fields[6]); err == nil && st.Mode().IsRegular() {
				return fields[6]
			}
		}
	}
	return "/bin/sh"
}

// lookPathIn finds a program in the (already joined) machine's PATH.
func lookPathIn(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			return "", fmt.Errorf("%s: not found in the machine", name)
		}
		return name, nil
	}
	pathVar := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathVar = v
		}
	}
	for _, d := range filepath.SplitList(pathVar) {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in the machine's PATH", name)
}

// openPtyHere opens a pty in the devpts of the mount namespace the thread is in.
func openPtyHere(rows, cols uint16) (*os.File, *os.File, error) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open the machine's /dev/ptmx: %w", err)
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, err
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	if rows > 0 && cols > 0 {
		_ = unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}
	slave, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}
