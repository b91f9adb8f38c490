package userns

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"github.com/berthd/berth/internal/errdefs"
	"golang.org/x/sys/unix"
)

// IDMap is one line of a user namespace's uid_map and gid_map: the Count
// IDs from Inside in the namespace are the host's from Host.
type IDMap struct {
	Inside, Host, Count uint32
}

// NS is a user namespace that exists for its ID mapping alone: what
// mount_setattr(MOUNT_ATTR_IDMAP) takes to idmap a mount. Its holder is a bare
// copy of this process that does nothing but wait to be killed; the
// namespace's file descriptor pins the namespace as long as it is open.
type NS struct {
	fd  int
	pid int
}

// RangeNS makes the user namespace of the machine range at base: IDs
// 0…Size-1 inside are base… on the host, users and groups alike.
func RangeNS(base uint32) (*NS, error) {
	return OpenNS(IDMap{Inside: 0, Host: base, Count: Size})
}

// OpenNS makes a user namespace whose UIDs and GIDs are both mapped by maps
// and opens it. Equivalent to `unshare --user --map-users=… --map-groups=…
// sleep infinity &` and opening /proc/$!/ns/user, without a helper binary:
// the holder is forked with a raw clone(2), as Go's own forkAndExecInChild1
// forks, and never executes anything. Close ends it.
func OpenNS(maps ...IDMap) (*NS, error) {
	if len(maps) == 0 {
		return nil, errdefs.Errorf(errdefs.ErrInvalid, "user namespace: no ID mapping")
	}
	var b strings.Builder
	for _, m := range maps {
		fmt.Fprintf(&b, "%d %d %d\n", m.Inside, m.Host, m.Count)
	}
	lines := b.String()
	pid, err := forkHolder()
	if err != nil {
		return nil, fmt.Errorf("user namespace: clone(CLONE_NEWUSER): %w", err)
	}
	ns := &NS{fd: -1, pid: pid}
	if err := ns.setUp(lines); err != nil {
		ns.Close()
		return nil, fmt.Errorf("user namespace %q: %w", strings.TrimSpace(lines), err)
	}
	return ns, nil
}

// setUp writes the holder's maps and opens its namespace.
func (ns *NS) setUp(lines string) error {
	proc := fmt.Sprintf("/proc/%d/", ns.pid)
	if os.Geteuid() != 0 {
		// Without CAP_SETGID over the parent namespace the kernel takes a
		// gid_map only once setgroups(2) is denied in the new one.
		if err := writeProc(proc+"setgroups", "deny"); err != nil {
			return err
		}
	}
	for _, f := range []string{"uid_map", "gid_map"} {
		if err := writeProc(proc+f, lines); err != nil {
			return err
		}
	}
	fd, err := unix.Open(proc+"ns/user", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: proc + "ns/user", Err: err}
	}
	ns.fd = fd
	return nil
}

// writeProc writes a /proc file in one write(2), as uid_map wants.
func writeProc(path, data string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(data)); err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

// Fd is the namespace's file descriptor (close-on-exec); it stays valid
// until Close.
func (ns *NS) Fd() int { return ns.fd }

// Pid is the holder's process ID.
func (ns *NS) Pid() int { return ns.pid }

// Close closes the namespace's descriptor and kills and reaps its holder.
// The namespace itself lives on while mounts idmapped with it exist.
func (ns *NS) Close() error {
	if ns == nil {
		return nil
	}
	var err error
	if ns.fd >= 0 {
		err = unix.Close(ns.fd)
		ns.fd = -1
	}
	if ns.pid > 0 {
		// The holder is this process's child, unreaped: its PID cannot
		// have been reused, so killing by PID hits it and only it.
		_ = unix.Kill(ns.pid, unix.SIGKILL)
		for {
			_, werr := unix.Wait4(ns.pid, nil, 0, nil)
			if werr != unix.EINTR {
				break
			}
		}
		ns.pid = 0
	}
	return err
}

// holderName is the holder's command name in ps (PR_SET_NAME), NUL-ended.
var holderName = [16]byte{'b', 'e', 'r', 't', 'h', '-', 'u', 's', 'e', 'r', 'n', 's'}

// forkHolder forks the holder with every signal blocked on the forking
// thread, as Go's runtime_BeforeFork does: a signal arriving in the child
// would run the Go runtime's handler in a process whose runtime has one
// thread and locks held by threads that no longer exist.
func forkHolder() (int, error) {
	runtime.LockOSThread()
	var all, old unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^all.Val[i] // every bit: every signal
	}
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &all, &old); err != nil {
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("block signals: %w", err)
	}
	pid, errno := cloneHolder(uintptr(unix.Getpid()))
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil); err != nil {
		// Never with a valid set. Should it happen, the thread stays locked
		// (and ends with this goroutine) rather than go back to the
		// scheduler with every signal blocked.
		if errno == 0 {
			(&NS{fd: -1, pid: int(pid)}).Close()
		}
		return 0, fmt.Errorf("restore the signal mask: %w", err)
	}
	runtime.UnlockOSThread()
	if errno != 0 {
		return 0, errno
	}
	return int(pid), nil
}

// cloneHolder is the fork. The child is a copy of this process with one
// thread and a Go runtime it must not enter, so everything after the clone
// is raw system calls in this one frame: nosplit, so that the stack can
// never grow (growing calls into the runtime), no allocation, no writes to
// the heap. It asks to be killed with its parent (the forking thread), makes
// sure the parent did not die before that, and then waits forever; SIGKILL
// is the only way out. pause(2) does not exist on arm64: ppoll with no
// descriptors and no timeout is the same wait everywhere.
//
//go:nosplit
//go:norace
func cloneHolder(ppid uintptr) (uintptr, syscall.Errno) {
	flags := uintptr(syscall.CLONE_NEWUSER | syscall.SIGCHLD)
	var pid uintptr
	var errno syscall.Errno
	if runtime.GOARCH == "s390x" {
		// clone's first two arguments are swapped on s390x.
		pid, _, errno = syscall.RawSyscall6(syscall.SYS_CLONE, 0, flags, 0, 0, 0, 0)
	} else {
		pid, _, errno = syscall.RawSyscall6(syscall.SYS_CLONE, flags, 0, 0, 0, 0, 0)
	}
	if errno != 0 || pid != 0 {
		return pid, errno
	}
	syscall.RawSyscall(syscall.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0)
	syscall.RawSyscall(syscall.SYS_PRCTL, unix.PR_SET_NAME, uintptr(unsafe.Pointer(&holderName[0])), 0)
	if p, _, _ := syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0); p != ppid {
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
	}
	for {
		syscall.RawSyscall6(unix.SYS_PPOLL, 0, 0, 0, 0, 0, 0)
	}
}
