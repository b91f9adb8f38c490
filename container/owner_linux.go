package container

import (
	"fmt"
	"os/exec"

	"golang.org/x/sys/unix"
)

// startOwnedBy starts cmd, whose clone makes the machine's user namespace,
// with this thread's effective UID switched to uid (the machine's root on the
// host) for the clone, so that the kernel records uid as the namespace's
// owner. The per-user counts that span namespaces (inotify instances and
// watches, fanotify groups, user and other namespaces, POSIX message queue
// bytes, pending signals) are charged up the chain of namespaces to each
// owner: with the host's root as the owner of every machine's namespace,
// every machine and the host's own root processes share one count, and
// fs.inotify.max_user_instances (128 on Debian) is used up by 15 Debian guests
// (the 16th boots degraded: its path units fail), or by one hostile guest for
// the whole host. Owned by its own UID, each machine has a host user's limits
// to itself, as an unprivileged container of that user would. The owner rule
// of user_namespaces(7) gives a process of the host whose effective UID is
// uid all capabilities in the machine's namespaces; that UID is the machine's
// root already (it owns the machine's files), and no host account has it
// (ranges are checked against /etc/subuid and the password database).
//
// then runs once cmd has started, before the thread is root again: setting
// the init stage's resource limits (prlimit) needs CAP_SYS_RESOURCE in the
// machine's user namespace, which the host's root has through the owner rule
// when it is the owner and otherwise only if its own set holds the
// capability (roots without it exist: a host whose bounding set drops it).
//
// The caller's goroutine must be locked to its thread, which Go's fork runs
// on: credentials are per thread, and a raw setresuid changes this thread's
// only (syscall.Setresuid would change every thread's). The switch clears
// the effective capabilities (the real and saved UIDs stay 0, so the
// permitted set stays); they are raised again for the clone and for writing
// the child's ID maps, and restored exactly after.
//
// uid 0 (a machine without a user namespace of its own) starts cmd as it is.
func startOwnedBy(uid uint32, cmd *exec.Cmd, then func()) error {
	if uid == 0 {
		if err := cmd.Start(); err != nil {
			return err
		}
		then()
		return nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		return fmt.Errorf("start payload: capabilities: %w", err)
	}
	// A change of effective UID also resets the whole process's dumpable
	// flag (to fs.suid_dumpable, 0): it is put back after.
	dumpable, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		return fmt.Errorf("start payload: become UID %d to own its user namespace: %w", uid, e)
	}
	restore := func() error {
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
			return e
		}
		if err := unix.Capset(&hdr, &caps[0]); err != nil {
			return err
		}
		return unix.Prctl(unix.PR_SET_DUMPABLE, uintptr(dumpable), 0, 0, 0)
	}
	if err := unix.Capset(&hdr, &caps[0]); err != nil {
		if rerr := restore(); rerr != nil {
			panic(fmt.Sprintf("container: cannot return to UID 0 after starting a payload: %v", rerr))
		}
		return fmt.Errorf("start payload: capabilities as UID %d: %w", uid, err)
	}
	err := cmd.Start()
	if err == nil {
		then()
	}
	// A thread left as another user would act as it for whatever runs on it
	// next: better to end the supervisor than to go on so.
	if rerr := restore(); rerr != nil {
		panic(fmt.Sprintf("container: cannot return to UID 0 after starting a payload: %v", rerr))
	}
	return err
}
