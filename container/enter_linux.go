package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// EnterOptions describe a command to run inside a running machine.
type EnterOptions struct {
	// Command is the program and its arguments; the program is looked up in the
	// machine's PATH when it has no slash. Default: /bin/sh.
	Command []string
	// Env is added to a minimal environment (PATH, HOME, TERM, container).
	Env []string
	// Dir is the working directory inside the machine; default /.
	Dir string
	// TTY allocates a pty inside the machine's own devpts (the guest sees its
	// own /dev/pts/N); Stdin/Stdout carry the master side, Stderr is unused.
	TTY        bool
	Rows, Cols uint16
	Stdin      io.Reader
	Stdout     io.Writer
	Stderr     io.Writer
}

// Enter runs a command in the running machine whose PID 1 is leaderPID (as
// seen on the host): in all its namespaces (mount, PID, UTS, IPC, network,
// cgroup), in its root, in PID 1's cgroups, with PID 1's capability bounding
// set. It returns the command's own exit code (128+N when a signal N ended it),
// unlike `machinectl shell`.
//
// How: Go runs many threads, and setns(CLONE_NEWNS) refuses a thread that
// shares its filesystem context (root, cwd) with others. So a goroutine locks
// itself to a fresh OS thread, unshares CLONE_FS on it, joins the machine's
// namespaces with one setns() on a pidfd of PID 1 (which also cannot race a
// reused PID), moves that one thread into PID 1's v1 cgroups ("tasks"), drops
// capabilities, and forks the command from that thread; the cgroup2 placement
// is atomic through clone3(CLONE_INTO_CGROUP). The thread is never handed
// back to the Go scheduler: the goroutine ends locked, and the runtime
// destroys the thread. Joining a user namespace this way is impossible
// (setns(CLONE_NEWUSER) needs a single-threaded caller); for user-namespaced
// machines this will become a re-exec stage whose C constructor joins before
// the Go runtime starts, as runc's nsexec.
func Enter(ctx context.Context, leaderPID int, opts EnterOptions) (int, error) {
	if len(opts.Command) == 0 {
		opts.Command = []string{"/bin/sh"}
	}
	if opts.Dir == "" {
		opts.Dir = "/"
	}
	pidfd, err := unix.PidfdOpen(leaderPID, 0)
	if err != nil {
		return -1, fmt.Errorf("enter machine (PID %d): %w", leaderPID, err)
	}
	defer unix.Close(pidfd)
	place, err := readProcCgroups(leaderPID)
	if err != nil {
		return -1, fmt.Errorf("enter machine (PID %d): %w", leaderPID, err)
	}
	bnd, err := readCapBnd(leaderPID)
	if err != nil {
		return -1, fmt.Errorf("enter machine (PID %d): %w", leaderPID, err)
	}

	type started struct {
		proc   *os.Process
		master *os.File
		copies *sync.WaitGroup
		err    error
	}
	ch := make(chan started, 1)
	var enter func()
	enter = func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread is never destroyed (the runtime parks it for
			// good instead), so it must not be the one that changes: it
			// would stay in the machine's namespaces and cgroups, and the
			// supervisor's cleanup would count this process as the
			// machine's. Hold it and let a goroutine on another thread do
			// the work.
			done := make(chan struct{})
			go func() { enter(); close(done) }()
			<-done
			runtime.UnlockOSThread()
			return
		}
		// No UnlockOSThread: this thread is about to be changed for good,
		// and the runtime destroys it when the goroutine ends.
		var copies sync.WaitGroup
		p, m, err := enterAndStart(pidfd, place, bnd, opts, &copies)
		ch <- started{p, m, &copies, err}
	}
	go enter()
	st := <-ch
	if st.err != nil {
		return -1, fmt.Errorf("enter machine (PID %d): %w", leaderPID, st.err)
	}
	if st.master != nil {
		defer st.master.Close()
		if opts.Stdin != nil {
			go func() { _, _ = io.Copy(st.master, opts.Stdin) }()
		}
	}
	copied := make(chan struct{})
	if st.master != nil && opts.Stdout != nil {
		go func() { _, _ = io.Copy(opts.Stdout, st.master); close(copied) }()
	} else {
		close(copied)
	}
	stop := context.AfterFunc(ctx, func() { _ = st.proc.Kill() })
	defer stop()
	ps, err := st.proc.Wait()
	if err != nil {
		return -1, err
	}
	if st.master != nil {
		// Drain what the command printed last; the master reads EIO once the
		// slave is closed everywhere.
		<-copied
	}
	st.copies.Wait()
	ws := ps.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
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
func enterAndStart(pidfd int, place procCgroups, bnd uint64, opts EnterOptions, copies *sync.WaitGroup) (*os.Process, *os.File, error) {
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
			return nil, nil, fmt.Errorf("join cgroup %s: %w", dir, err)
		}
	}
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, nil, fmt.Errorf("unshare fs: %w", err)
	}
	flags := unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP
	if err := unix.Setns(pidfd, flags); err != nil {
		return nil, nil, fmt.Errorf("join namespaces: %w", err)
	}
	if err := dropBoundingSet(bnd); err != nil {
		return nil, nil, err
	}
	// From here on, paths are the machine's.
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "container=berth"}
	term := "TERM=dumb"
	if opts.TTY {
		term = "TERM=xterm-256color"
		if t := os.Getenv("TERM"); t != "" {
			term = "TERM=" + t
		}
	}
	env = append(append(env, term), opts.Env...)
	path, err := lookPathIn(opts.Command[0], env)
	if err != nil {
		return nil, nil, err
	}
	sys := &syscall.SysProcAttr{}
	if cgfd >= 0 {
		sys.UseCgroupFD, sys.CgroupFD = true, cgfd
	}
	attr := &os.ProcAttr{Dir: opts.Dir, Env: env, Sys: sys}
	var master, slave *os.File
	if opts.TTY {
		master, slave, err = openPtyHere(opts.Rows, opts.Cols)
		if err != nil {
			return nil, nil, err
		}
		defer slave.Close()
		attr.Files = []*os.File{slave, slave, slave}
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
	} else {
		in, out, errf, cleanup, err := stdioFiles(opts, copies)
		if err != nil {
			return nil, nil, err
		}
		defer cleanup()
		attr.Files = []*os.File{in, out, errf}
	}
	p, err := os.StartProcess(path, opts.Command, attr)
	if err != nil {
		if master != nil {
			master.Close()
		}
		return nil, nil, fmt.Errorf("start %s: %w", opts.Command[0], err)
	}
	return p, master, nil
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

// stdioFiles gives the child real files for its stdio: the caller's own when
// they are *os.File, pipes copied in goroutines otherwise, /dev/null for nil.
func stdioFiles(opts EnterOptions, copies *sync.WaitGroup) (in, out, errf *os.File, cleanup func(), err error) {
	var closers []*os.File
	cleanup = func() {
		for _, c := range closers {
			c.Close()
		}
	}
	null := func(flag int) (*os.File, error) {
		// The host's /dev/null is not reachable from the thread any more; the
		// machine has its own.
		f, err := os.OpenFile("/dev/null", flag, 0)
		if err == nil {
			closers = append(closers, f)
		}
		return f, err
	}
	if f, ok := opts.Stdin.(*os.File); ok {
		in = f
	} else if opts.Stdin == nil {
		if in, err = null(os.O_RDONLY); err != nil {
			return
		}
	} else {
		r, w, perr := os.Pipe()
		if perr != nil {
			return nil, nil, nil, cleanup, perr
		}
		closers = append(closers, r)
		go func() { _, _ = io.Copy(w, opts.Stdin); w.Close() }()
		in = r
	}
	outFile := func(wr io.Writer) (*os.File, error) {
		if f, ok := wr.(*os.File); ok {
			return f, nil
		}
		if wr == nil {
			return null(os.O_WRONLY)
		}
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		closers = append(closers, w)
		copies.Add(1)
		go func() { defer copies.Done(); _, _ = io.Copy(wr, r); r.Close() }()
		return w, nil
	}
	if out, err = outFile(opts.Stdout); err != nil {
		return
	}
	if opts.Stderr != nil && opts.Stderr == opts.Stdout {
		// One stream for both, as a shell's 2>&1: ordered, and no race between
		// two copiers writing into one writer.
		return in, out, out, cleanup, nil
	}
	errf, err = outFile(opts.Stderr)
	return
}
