package container

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
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

// EnterOptions describe a command to run inside a running machine.
type EnterOptions struct {
	// Command is the program and its arguments; the program is looked up in the
	// machine's PATH when it has no slash. Empty: root's login shell from the
	// machine's /etc/passwd (or /bin/sh), started as a login shell.
	Command []string `json:"command,omitempty"`
	// Env is added to a minimal environment (PATH, HOME, TERM, container).
	Env []string `json:"env,omitempty"`
	// Dir is the working directory inside the machine; default / (/root for a
	// login shell).
	Dir string `json:"dir,omitempty"`
	// TTY gives the command a new pty in the machine's own devpts (the guest
	// sees /dev/pts/N of its own); Stdin and Stdout carry its master side and
	// Stderr is unused. Without it the command gets new pipes. Either way the
	// command's fds 0, 1 and 2 are made by the supervisor and are the only ones
	// it has: nothing of the caller reaches the guest.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`

	// MergeStderr gives the command one pipe for its stdout and stderr, as a
	// shell's 2>&1: Enter sets it when Stderr is Stdout.
	MergeStderr bool `json:"mergeStderr,omitempty"`

	Stdin  io.Reader `json:"-"`
	Stdout io.Writer `json:"-"`
	Stderr io.Writer `json:"-"`
	// Size and Resized pass the caller's terminal size on to the pty (SIGWINCH).
	Size    func() (rows, cols uint16) `json:"-"`
	Resized <-chan struct{}            `json:"-"`
	// Signals are passed on to the command (the caller's SIGINT, SIGTERM …
	// when it has no pty to carry them).
	Signals <-chan os.Signal `json:"-"`
}

// execReply is the supervisor's first answer to an exec request; it carries
// the caller's ends of the command's pty or pipes as SCM_RIGHTS.
type execReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Streams names the fds that come with the reply, in order: "pty", or
	// "stdin", "stdout" and "stderr".
	Streams []string `json:"streams,omitempty"`
}

// execEvent is a later line on an exec connection: the command's end from the
// supervisor, or a signal for it from the caller.
type execEvent struct {
	Exit   *int `json:"exit,omitempty"`
	Signal int  `json:"signal,omitempty"`
}

// Enter runs a command in the running machine whose runtime directory is
// runDir and returns the command's own exit code (128+N when a signal N ended
// it), unlike `machinectl shell`. The machine's supervisor starts it, as
// `machinectl shell` has systemd start it: in all the machine's namespaces
// (mount, PID, UTS, IPC, network, cgroup), in its root and cgroups, with its
// bounding set and system call filter, on a pty or pipes it makes; this
// process only relays. When ctx ends or this process goes away, the command
// and its process group are killed.
func Enter(ctx context.Context, runDir string, opts EnterOptions) (int, error) {
	c := &Client{runDir: runDir}
	conn, err := c.conn(ctx)
	if err != nil {
		return -1, fmt.Errorf("enter machine: %w", err)
	}
	defer conn.Close()
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return -1, errors.New("enter machine: control connection is not a unix socket")
	}
	if opts.TTY && opts.Size != nil {
		opts.Rows, opts.Cols = opts.Size()
	}
	if opts.Stderr != nil && opts.Stderr == opts.Stdout {
		opts.MergeStderr = true
	}
	if err := json.NewEncoder(conn).Encode(request{Op: "exec", Exec: &opts}); err != nil {
		return -1, fmt.Errorf("enter machine: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	reply, files, rest, err := readExecReply(uc)
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return -1, fmt.Errorf("enter machine: %w", err)
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if !reply.OK {
		return -1, errors.New(reply.Error)
	}
	if len(files) != len(reply.Streams) {
		return -1, fmt.Errorf("enter machine: %d streams announced, %d received", len(reply.Streams), len(files))
	}
	stream := map[string]*os.File{}
	for i, n := range reply.Streams {
		stream[n] = files[i]
	}

	var copies sync.WaitGroup
	pump := func(dst io.Writer, src *os.File) {
		if dst == nil {
			dst = io.Discard
		}
		copies.Add(1)
		go func() { defer copies.Done(); _, _ = io.Copy(dst, src) }()
	}
	if m := stream["pty"]; m != nil {
		if opts.Stdin != nil {
			go func() { _, _ = io.Copy(m, opts.Stdin) }()
		}
		pump(opts.Stdout, m)
		if opts.Resized != nil && opts.Size != nil {
			go func() {
				for range opts.Resized {
					r, c := opts.Size()
					_ = unix.IoctlSetWinsize(int(m.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: r, Col: c})
				}
			}()
		}
	} else {
		if w := stream["stdin"]; w != nil {
			go func() {
				if opts.Stdin != nil {
					_, _ = io.Copy(w, opts.Stdin)
				}
				w.Close()
			}()
		}
		pump(opts.Stdout, stream["stdout"])
		if e := stream["stderr"]; e != nil {
			pump(opts.Stderr, e)
		}
	}
	if opts.Signals != nil {
		go func() {
			enc := json.NewEncoder(conn)
			for sig := range opts.Signals {
				if s, ok := sig.(syscall.Signal); ok {
					if enc.Encode(execEvent{Signal: int(s)}) != nil {
						return
					}
				}
			}
		}()
	}
	dec := json.NewDecoder(io.MultiReader(rest, conn))
	var ev execEvent
	for ev.Exit == nil {
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return -1, ctx.Err()
			}
			return -1, fmt.Errorf("enter machine: the supervisor gave no exit status: %w", err)
		}
	}
	// What the command printed last is still on its way: wait until its
	// streams end, but not for a background process that keeps them open.
	drained := make(chan struct{})
	go func() { copies.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
	}
	return *ev.Exit, nil
}

// readExecReply reads the supervisor's first line and the fds sent with it.
func readExecReply(uc *net.UnixConn) (execReply, []*os.File, io.Reader, error) {
	var r execReply
	var files []*os.File
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(3*4))
	var data []byte
	for {
		n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			cms, perr := unix.ParseSocketControlMessage(oob[:oobn])
			if perr == nil {
				for _, cm := range cms {
					if fds, err := unix.ParseUnixRights(&cm); err == nil {
						for _, fd := range fds {
							unix.CloseOnExec(fd)
							files = append(files, os.NewFile(uintptr(fd), "enter"))
						}
					}
				}
			}
		}
		data = append(data, buf[:n]...)
		if i := strings.IndexByte(string(data), '\n'); i >= 0 {
			if err := json.Unmarshal(data[:i], &r); err != nil {
				return r, files, nil, fmt.Errorf("bad answer from the supervisor: %w", err)
			}
			return r, files, strings.NewReader(string(data[i+1:])), nil
		}
		if err != nil {
			return r, files, nil, fmt.Errorf("no answer from the supervisor: %w", err)
		}
		if len(data) > 1<<16 {
			return r, files, nil, errors.New("answer from the supervisor too long")
		}
	}
}

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

// enterAndStart runs on a locked thread that it changes for good.
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
	tid := strconv.Itoa(unix.Gettid())
	for _, dir := range place.v1 {
		if err := os.WriteFile(filepath.Join(dir, "tasks"), []byte(tid), 0); err != nil {
			return nil, fmt.Errorf("join cgroup %s: %w", dir, err)
		}
	}
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, fmt.Errorf("unshare fs: %w", err)
	}
	flags := unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP
	if err := unix.Setns(pidfd, flags); err != nil {
		return nil, fmt.Errorf("join namespaces: %w", err)
	}
	if err := dropBoundingSet(bnd); err != nil {
		return nil, err
	}
	// The command is visible in the machine's PID namespace from its fork
	// on: it must hold no more than the machine's set from then, not only
	// after its exec.
	if err := limitToBounding(bnd); err != nil {
		return nil, err
	}
	// The machine's system call filter, on this thread only: the command
	// forked from it inherits it.
	if err := loadSeccomp(filter, false); err != nil {
		return nil, err
	}
	// From here on, paths are the machine's.
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "container=berth"}
	term := "TERM=dumb"
	if opts.TTY {
		term = "TERM=xterm-256color"
	}
	env = append(append(env, term), opts.Env...)
	argv := opts.Command
	dir := opts.Dir
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
	e := &entered{}
	var child []*os.File
	defer func() {
		for _, f := range child {
			f.Close()
		}
	}()
	if opts.TTY {
		master, slave, err := openPtyHere(opts.Rows, opts.Cols)
		if err != nil {
			return nil, err
		}
		child = append(child, slave)
		e.caller, e.names = []*os.File{master}, []string{"pty"}
		attr.Files = []*os.File{slave, slave, slave}
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
	} else {
		// Pipes only: the caller's files, a terminal among them, never reach
		// the guest (TIOCSTI into the caller's shell, an inherited pipe).
		n := 3
		if opts.MergeStderr {
			n = 2
		}
		var ends [3][2]*os.File
		for i := 0; i < n; i++ {
			r, w, err := os.Pipe()
			if err != nil {
				for _, f := range child {
					f.Close()
				}
				for _, f := range e.caller {
					f.Close()
				}
				child = nil
				return nil, err
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
		sys.Setpgid = true
	}
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
