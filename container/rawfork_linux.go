package container

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The raw fork that enters a running machine.
//
// Joining a user namespace (setns(CLONE_NEWUSER)) needs a single-threaded
// caller, and a Go process never is one. So the supervisor forks a copy of
// itself (clone(SIGCHLD), as fork(2): the copy holds only the forking thread)
// and that copy joins the machine, then forks the command with
// clone(CLONE_PARENT), so that the command is a process of the machine's PID
// namespace and a child of the supervisor, which waits for it.
//
// Go's own fork (syscall.forkAndExecInChild1) brackets the fork with
// runtime_BeforeFork and runtime_AfterFork, which this package cannot call
// (they are the runtime's). What they do, and how this code does without:
//
//   - They block every signal on the forking thread, so that no Go signal
//     handler runs in the copy. rawFork does it itself (rt_sigprocmask on a
//     thread the goroutine is locked to) and restores the mask in the parent;
//     the copies keep everything blocked, and the command's process resets
//     every handler to SIG_DFL before it restores the mask and execs.
//   - They spoil the goroutine's stack guard, so that an attempt to grow the
//     stack in the copy crashes at once instead of calling into the
//     scheduler. Here every function the copies run is //go:nosplit: the
//     compiler emits no stack check at all, and the linker refuses to build a
//     chain of them that does not fit the space every goroutine keeps free.
//   - They hold m.locks, so the goroutine is not preempted. With signals
//     blocked and nothing but nosplit code and raw system calls between the
//     mask and the clone, there is no point where it could be.
//
// The copies must not allocate, take locks, or write pointers (a write
// barrier may be on in the copied heap): they run only raw system calls, and
// write only integers (the report, the capability words), into their own copy
// of a forkSpec the parent filled in. //go:norace and //go:nocheckptr keep the
// race detector's and checkptr's calls out of them. syscall.ForkLock is held
// across the fork, as Go's own fork holds it.

// forkSpec is everything the raw fork's copies need, prepared by the parent:
// they can only read it (and write integers into their own copy).
type forkSpec struct {
	pidfd   uintptr   // PID 1 of the machine
	nsFlags uintptr   // setns flags: every namespace of PID 1 (CLONE_NEWUSER with a user namespace)
	userns  bool      // switch to the user namespace's root (setgroups, setresgid, setresuid)
	clone   cloneArgs // the first fork's: into PID 1's cgroup2 cgroup, when clone.cgroup is set
	cgroups []uintptr // "tasks" of PID 1's cgroup in each v1 hierarchy, opened for writing
	zero    [1]byte   // "0": the writer itself, to a cgroup file
	keep    uint64    // PID 1's bounding set
	capHdr  unix.CapUserHeader
	capData [2]unix.CapUserData
	filter  *unix.SockFprog // the machine's system call filter; nil: none
	stdio   [3]uintptr      // the command's fds 0, 1 and 2 (each ≥ 3 in this process)
	ctty    bool            // fd 0 is a pty slave: make it the controlling terminal
	path    *byte
	argv    []*byte // nil-terminated
	envv    []*byte // nil-terminated
	dir     *byte
	sigAll  uint64    // every signal, for rt_sigprocmask
	sigmask uint64    // the forking thread's mask, which the command execs with
	sigDfl  [4]uint64 // a struct sigaction of SIG_DFL (all zero, on amd64 and arm64)
	report  uintptr   // write end of the report pipe (close-on-exec)
	msg     [3]uintptr

	// For error messages and release only; the copies never read these.
	cgroupPaths []string
	pathName    string
	dirName     string
	raised      []int // copies of stdio fds below 3, closed by release
}

// cloneArgs is clone3(2)'s struct clone_args (CLONE_ARGS_SIZE_VER2).
type cloneArgs struct {
	flags, pidfd, childTID, parentTID, exitSignal, stack, stackSize, tls, setTID, setTIDSize, cgroup uint64
}

// Stages of the entering copies, as they report them on the report pipe.
const (
	stageStarted  = iota // the intermediate: the command started, msg[2] is its pid
	stageCgroup          // msg[2] is the index in cgroups
	stageSetns           //
	stageGroups          //
	stageIDs             //
	stageBounding        // msg[2] is the capability
	stageAmbient         //
	stageDumpable        //
	stageSeccomp         //
	stageCaps            //
	stageFork            //
	stageSetsid          //
	stageStdio           //
	stageCtty            //
	stageSigmask         //
	stageChdir           //
	stageExec            //
)

var stageWhat = [...]string{
	stageCgroup:   "join cgroup",
	stageSetns:    "join the machine's namespaces",
	stageGroups:   "drop the supplementary groups",
	stageIDs:      "become the machine's root user",
	stageBounding: "drop from the bounding set capability",
	stageAmbient:  "clear the ambient capabilities",
	stageDumpable: "make the process non-dumpable",
	stageSeccomp:  "load the system call filter",
	stageCaps:     "limit capabilities to the machine's bounding set",
	stageFork:     "fork into the machine's PID namespace",
	stageSetsid:   "start a session",
	stageStdio:    "set up fds 0, 1 and 2",
	stageCtty:     "take the pty as controlling terminal",
	stageSigmask:  "restore the signal mask",
	stageChdir:    "chdir",
	stageExec:     "exec",
}

// start forks the entering copies, waits until the command has been exec'd
// (or failed to be) and returns its pid: a child of this process, in the
// machine.
func (s *forkSpec) start() (int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return 0, fmt.Errorf("report pipe: %w", err)
	}
	s.report = uintptr(p[1])
	syscall.ForkLock.Lock()
	runtime.LockOSThread()
	ipid, errno := rawFork(s)
	runtime.UnlockOSThread()
	syscall.ForkLock.Unlock()
	unix.Close(p[1])
	defer unix.Close(p[0])
	if errno != 0 {
		return 0, fmt.Errorf("fork: %w", errno)
	}
	// EOF once the intermediate has exited and the command has exec'd.
	pid, failed, err := readReports(p[0])
	ws := reap(int(ipid))
	runtime.KeepAlive(s)
	if failed != nil {
		if pid > 0 {
			reap(pid)
		}
		return 0, s.failure(*failed)
	}
	if err != nil {
		return 0, err
	}
	if pid == 0 {
		return 0, fmt.Errorf("the entering process ended (wait status %#x) before it started the command", uint32(ws))
	}
	return pid, nil
}

// readReports reads the copies' reports until EOF: the command's pid from
// the intermediate, and what failed, if anything did.
func readReports(fd int) (pid int, failed *[3]uintptr, err error) {
	for {
		var m [3]uintptr
		b := (*[unsafe.Sizeof(m)]byte)(unsafe.Pointer(&m))[:]
		n, err := unix.Read(fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return pid, failed, fmt.Errorf("read the report pipe: %w", err)
		case n == 0:
			return pid, failed, nil
		case n != len(b):
			return pid, failed, errors.New("short report from the entering process")
		case m[0] == stageStarted:
			pid = int(m[2])
		default:
			failed = &m
		}
	}
}

// reap waits for a child of this process and returns how it ended.
func reap(pid int) unix.WaitStatus {
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
			return ws
		}
	}
}

// failure is the error a failed stage reported.
func (s *forkSpec) failure(m [3]uintptr) error {
	what := "enter"
	if m[0] < uintptr(len(stageWhat)) && stageWhat[m[0]] != "" {
		what = stageWhat[m[0]]
	}
	switch m[0] {
	case stageCgroup:
		if m[2] < uintptr(len(s.cgroupPaths)) {
			what += " " + s.cgroupPaths[m[2]]
		}
	case stageBounding:
		what += fmt.Sprintf(" %d", m[2])
	case stageChdir:
		what += " " + s.dirName
	case stageExec:
		what += " " + s.pathName
	}
	return fmt.Errorf("%s: %w", what, syscall.Errno(m[1]))
}

// rawFork forks the calling thread with every signal blocked; the copy runs
// enterMachine and never returns. It must run on a thread the goroutine is
// locked to (the signal mask is the thread's).
//
//go:noinline
//go:nosplit
//go:norace
//go:nocheckptr
func rawFork(s *forkSpec) (uintptr, syscall.Errno) {
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&s.sigAll)), uintptr(unsafe.Pointer(&s.sigmask)), 8, 0, 0)
	var pid uintptr
	var e syscall.Errno
	if s.clone.flags&unix.CLONE_INTO_CGROUP != 0 {
		pid, _, e = syscall.RawSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&s.clone)), unsafe.Sizeof(s.clone), 0)
	} else {
		pid, _, e = syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	}
	if e != 0 || pid != 0 {
		syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&s.sigmask)), 0, 8, 0, 0)
		return pid, e
	}
	enterMachine(s)
	return 0, 0
}

// enterMachine is the intermediate process: single-threaded, so it may join
// the machine's user namespace. It joins PID 1's cgroups (while paths and
// permissions are still the host's), all its namespaces, becomes the
// machine's root, takes on PID 1's bounding set and filter, and forks the
// command, which is the first of these processes the machine's PID namespace
// ever holds. It reports the command's pid and exits.
//
//go:nosplit
//go:norace
//go:nocheckptr
func enterMachine(s *forkSpec) {
	for i := range s.cgroups {
		if _, _, e := syscall.RawSyscall(syscall.SYS_WRITE, s.cgroups[i], uintptr(unsafe.Pointer(&s.zero[0])), 1); e != 0 {
			childFail(s, stageCgroup, uintptr(i), e)
		}
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_SETNS, s.pidfd, s.nsFlags, 0); e != 0 {
		childFail(s, stageSetns, 0, e)
	}
	if s.userns {
		// 0 is the machine's root in its user namespace; the supplementary
		// groups of the host's root go.
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, 0, 0, 0); e != 0 {
			childFail(s, stageGroups, 0, e)
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, 0, 0, 0); e != 0 {
			childFail(s, stageIDs, 0, e)
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, 0, 0, 0); e != 0 {
			childFail(s, stageIDs, 0, e)
		}
	}
	restrict(s)
	pid, _, e := syscall.RawSyscall6(syscall.SYS_CLONE, unix.CLONE_PARENT, 0, 0, 0, 0, 0)
	if e != 0 {
		childFail(s, stageFork, 0, e)
	}
	if pid == 0 {
		execCommand(s)
	}
	childReport(s, stageStarted, 0, pid)
	for {
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
	}
}

// restrict gives the intermediate PID 1's bounding set, no ambient
// capabilities, makes it non-dumpable, loads the machine's filter (while it
// still holds CAP_SYS_ADMIN, which loading without no_new_privs needs) and
// then cuts its effective and permitted sets to the bounding set.
//
//go:nosplit
//go:norace
//go:nocheckptr
func restrict(s *forkSpec) {
	if c, e := dropBounding(s.keep); e != 0 {
		childFail(s, stageBounding, c, e)
	}
	if e := clearAmbient(); e != 0 {
		childFail(s, stageAmbient, 0, e)
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, unix.PR_SET_DUMPABLE, 0, 0); e != 0 {
		childFail(s, stageDumpable, 0, e)
	}
	if s.filter != nil {
		if _, _, e := syscall.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(s.filter))); e != 0 {
			childFail(s, stageSeccomp, 0, e)
		}
	}
	if e := capsWithin(s.keep, &s.capHdr, &s.capData); e != 0 {
		childFail(s, stageCaps, 0, e)
	}
}

// execCommand is the command's process, in the machine's PID namespace: it
// leads a session of its own, takes its fds 0, 1 and 2 (and the pty as its
// controlling terminal), lets every other fd close at exec, resets signal
// handlers and the mask, and execs.
//
//go:nosplit
//go:norace
//go:nocheckptr
func execCommand(s *forkSpec) {
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETSID, 0, 0, 0); e != 0 {
		childFail(s, stageSetsid, 0, e)
	}
	for i := uintptr(0); i < 3; i++ {
		if _, _, e := syscall.RawSyscall(syscall.SYS_DUP3, s.stdio[i], i, 0); e != 0 {
			childFail(s, stageStdio, 0, e)
		}
	}
	if s.ctty {
		if _, _, e := syscall.RawSyscall(syscall.SYS_IOCTL, 0, syscall.TIOCSCTTY, 0); e != 0 {
			childFail(s, stageCtty, 0, e)
		}
	}
	// Everything above 2 closes at exec, the report pipe too (EOF: exec done).
	if _, _, e := syscall.RawSyscall(unix.SYS_CLOSE_RANGE, 3, ^uintptr(0), unix.CLOSE_RANGE_CLOEXEC); e != 0 {
		childFail(s, stageStdio, 0, e)
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_CHDIR, uintptr(unsafe.Pointer(s.dir)), 0, 0); e != 0 {
		childFail(s, stageChdir, 0, e)
	}
	// Go's handlers must never run in this copy: SIG_DFL for all (execve would
	// reset caught ones anyway; ignored ones of the supervisor's do not reach
	// the command either), then the mask the command starts with.
	for sig := uintptr(1); sig <= 64; sig++ {
		if sig != uintptr(syscall.SIGKILL) && sig != uintptr(syscall.SIGSTOP) {
			syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, sig, uintptr(unsafe.Pointer(&s.sigDfl[0])), 0, 8, 0, 0)
		}
	}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&s.sigmask)), 0, 8, 0, 0); e != 0 {
		childFail(s, stageSigmask, 0, e)
	}
	_, _, e := syscall.RawSyscall(syscall.SYS_EXECVE, uintptr(unsafe.Pointer(s.path)), uintptr(unsafe.Pointer(&s.argv[0])), uintptr(unsafe.Pointer(&s.envv[0])))
	childFail(s, stageExec, 0, e)
}

// childReport writes one report (stage, errno, value) to the report pipe; a
// write of 3 words to a pipe is atomic.
//
//go:nosplit
//go:norace
//go:nocheckptr
func childReport(s *forkSpec, stage uintptr, e syscall.Errno, val uintptr) {
	s.msg[0], s.msg[1], s.msg[2] = stage, uintptr(e), val
	syscall.RawSyscall(syscall.SYS_WRITE, s.report, uintptr(unsafe.Pointer(&s.msg[0])), unsafe.Sizeof(s.msg))
}

// childFail reports a failed stage and ends the copy.
//
//go:nosplit
//go:norace
//go:nocheckptr
func childFail(s *forkSpec, stage, val uintptr, e syscall.Errno) {
	childReport(s, stage, e, val)
	for {
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 127, 0, 0)
	}
}

// dropBounding removes every capability not in keep from the calling
// thread's bounding set; a number the running kernel does not know (EINVAL)
// is skipped. It returns the capability it failed on.
//
//go:nosplit
//go:norace
func dropBounding(keep uint64) (uintptr, syscall.Errno) {
	for c := uintptr(0); c < 64; c++ {
		if keep&(1<<c) != 0 {
			continue
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0); e != 0 && e != syscall.EINVAL {
			return c, e
		}
	}
	return 0, 0
}

// clearAmbient empties the calling thread's ambient set (EINVAL: a kernel
// without ambient capabilities).
//
//go:nosplit
//go:norace
func clearAmbient() syscall.Errno {
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 && e != syscall.EINVAL {
		return e
	}
	return 0
}

// capsWithin shrinks the calling thread's effective and permitted sets to
// keep and empties its inheritable set, with hdr and data as the buffers.
//
//go:nosplit
//go:norace
//go:nocheckptr
func capsWithin(keep uint64, hdr *unix.CapUserHeader, data *[2]unix.CapUserData) syscall.Errno {
	hdr.Version, hdr.Pid = unix.LINUX_CAPABILITY_VERSION_3, 0
	if _, _, e := syscall.RawSyscall(syscall.SYS_CAPGET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return e
	}
	lo, hi := uint32(keep), uint32(keep>>32)
	data[0].Effective &= lo
	data[0].Permitted &= lo
	data[1].Effective &= hi
	data[1].Permitted &= hi
	data[0].Inheritable, data[1].Inheritable = 0, 0
	_, _, e := syscall.RawSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	return e
}
