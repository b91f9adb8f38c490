package container

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// procSpec is what the proc helper, a raw-forked copy of the supervisor,
// needs: C strings and integers prepared by the parent, which the copy only
// reads (see rawfork_linux.go for why the copy may do no more).
type procSpec struct {
	source, fstype, target *byte
	flags                  uintptr
	sigAll                 uint64 // every signal, for rt_sigprocmask
	sigmask                uint64 // the forking thread's mask, restored in the parent
}

var procName = [...]byte{'p', 'r', 'o', 'c', 0}

// mountProcAt mounts a procfs at target from a copy of this process forked
// from the calling thread, which must be locked to its goroutine and have
// joined the machine's PID namespace for its children: proc shows the PID
// namespace of the process that mounts it. Equivalent to `mount -t proc -o
// nosuid,nodev,noexec proc TARGET` run by PID 2 of the machine. The copy is
// the forking thread's: its mount namespace (M0) and credentials, except
// that it looks the target up as the host's root (fsuid 0), as an exec'd
// helper would. A raw fork instead of this binary started again: no Go
// runtime to start (milliseconds on every boot).
func mountProcAt(target string) error {
	t, err := unix.BytePtrFromString(target)
	if err != nil {
		return err
	}
	s := &procSpec{source: &procName[0], fstype: &procName[0], target: t,
		flags: unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, sigAll: ^uint64(0)}
	runtime.LockOSThread()
	pid, errno := forkMountProc(s)
	runtime.UnlockOSThread()
	if errno != 0 {
		return fmt.Errorf("fork the proc helper: %w", errno)
	}
	ws := reap(int(pid))
	runtime.KeepAlive(s)
	switch {
	case ws.Exited() && ws.ExitStatus() == 0:
		return nil
	case ws.Exited():
		return &os.PathError{Op: "mount proc", Path: target, Err: syscall.Errno(ws.ExitStatus())}
	}
	return fmt.Errorf("mount proc on %s: the helper ended with wait status %#x", target, uint32(ws))
}

// forkMountProc forks the proc helper with every signal blocked, as rawFork
// does. The copy resets its filesystem IDs, mounts, and exits with the
// mount's errno (0 when it worked).
//
//go:noinline
//go:nosplit
//go:norace
//go:nocheckptr
func forkMountProc(s *procSpec) (uintptr, syscall.Errno) {
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&s.sigAll)), uintptr(unsafe.Pointer(&s.sigmask)), 8, 0, 0)
	pid, _, e := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 || pid != 0 {
		syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&s.sigmask)), 0, 8, 0, 0)
		return pid, e
	}
	syscall.RawSyscall(syscall.SYS_SETFSUID, 0, 0, 0)
	syscall.RawSyscall(syscall.SYS_SETFSGID, 0, 0, 0)
	_, _, e = syscall.RawSyscall6(syscall.SYS_MOUNT, uintptr(unsafe.Pointer(s.source)), uintptr(unsafe.Pointer(s.target)),
		uintptr(unsafe.Pointer(s.fstype)), s.flags, 0, 0)
	for {
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, uintptr(e), 0, 0)
	}
}
