package container

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccompAvailable reports whether the kernel can filter system calls with a
// BPF program (SECCOMP_MODE_FILTER). A variable, so a test can play a kernel
// without.
var seccompAvailable = kernelHasSeccomp

func kernelHasSeccomp() bool {
	if _, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err != nil {
		return false
	}
	action := uint32(unix.SECCOMP_RET_ERRNO)
	_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&action)))
	return e == 0
}

// loadSeccomp installs prog on the calling thread, or with allThreads on every
// thread of the process (SECCOMP_FILTER_FLAG_TSYNC: the Go runtime runs
// several, and a process that lives on in the machine must be filtered on
// all). It does not set no_new_privs: the caller holds CAP_SYS_ADMIN, and
// setuid programs in the guest must keep working.
func loadSeccomp(prog []bpf.RawInstruction, allThreads bool) error {
	fprog := sockFprog(prog)
	if fprog == nil {
		return nil
	}
	var flags uintptr
	if allThreads {
		flags = unix.SECCOMP_FILTER_FLAG_TSYNC
	}
	r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(fprog)))
	runtime.KeepAlive(fprog)
	if e != 0 {
		return fmt.Errorf("load the system call filter: %w", e)
	}
	if r != 0 {
		return fmt.Errorf("load the system call filter: thread %d could not take it", r)
	}
	return nil
}

// sockFprog is prog as seccomp(2) takes it; nil for no program.
func sockFprog(prog []bpf.RawInstruction) *unix.SockFprog {
	if len(prog) == 0 {
		return nil
	}
	filters := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		filters[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	return &unix.SockFprog{Len: uint16(len(filters)), Filter: &filters[0]}
}
