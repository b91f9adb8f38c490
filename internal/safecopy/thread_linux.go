package safecopy

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// fsCaps are the capabilities a copy keeps: owners, modes and times of any
// file (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER,
// CAP_FSETID). Without CAP_SYS_RAWIO, CAP_SYS_ADMIN and the others a file the
// guest points berth at (a kernel interface it mounted, a device) gives berth
// no more than it gives any process with those five.
const fsCaps = 1<<unix.CAP_CHOWN | 1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH |
	1<<unix.CAP_FOWNER | 1<<unix.CAP_FSETID

// onCopyThread runs fn on an OS thread of its own, locked and never unlocked,
// so the thread ends with fn and its credentials never serve other code: it
// keeps only fsCaps, and with fsUser its filesystem user and group are id (a
// machine's root on the host), which the machine's idmapped root can map. The
// credential calls are raw system calls on this thread alone, not the Go
// wrappers that change every thread of the process. The runtime starts new
// threads from its template thread, never from a locked one, so nothing
// inherits them.
func onCopyThread(fsUser bool, id uint32, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := restrictThread(fsUser, id); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func restrictThread(fsUser bool, id uint32) error {
	if fsUser {
		// Keep the capabilities across the change of filesystem IDs, which
		// would otherwise clear the filesystem ones.
		const secbitNoSetuidFixup = 1 << 2
		if _, _, e := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, secbitNoSetuidFixup, 0); e != 0 {
			return fmt.Errorf("keep capabilities across setfsuid: %w", e)
		}
		_, _, _ = unix.RawSyscall(unix.SYS_SETFSGID, uintptr(id), 0, 0)
		_, _, _ = unix.RawSyscall(unix.SYS_SETFSUID, uintptr(id), 0, 0)
		// Both calls return the previous ID; an invalid one (-1) changes
		// nothing and tells the current.
		gid, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, ^uintptr(0), 0, 0)
		uid, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0)
		if uint32(uid) != id || uint32(gid) != id {
			return fmt.Errorf("setfsuid %d: the thread's filesystem IDs are %d:%d", id, uid, gid)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[0].Effective &= fsCaps
	data[0].Permitted &= fsCaps
	data[0].Inheritable = 0
	data[1] = unix.CapUserData{}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}
