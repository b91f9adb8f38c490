package container

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// OpenRunningRoot opens the root of the running machine supervised in runDir
// as its guest sees it, mounts and all: its leader's /proc/PID/root, the
// way machinectl copy-to reaches a machine. It also returns the machine's
// users (nil: the host's). It fails with ErrNotRunning when no supervisor
// runs there or the guest's init has not started yet (before that the
// leader's root is still the host's).
//
// A PID can be reused: the leader is held by a pidfd while its root is
// opened, and is checked to be alive and the supervisor's still after, so
// the root is the one of the process state.json names.
func OpenRunningRoot(runDir string) (*os.File, *Users, error) {
	st, err := ReadState(runDir)
	if err != nil || !st.SupervisorAlive() || st.LeaderPID <= 0 {
		return nil, nil, fmt.Errorf("%s: %w", runDir, ErrNotRunning)
	}
	switch st.Phase {
	case PhaseBooting, PhaseRunning, PhaseStopping:
	default:
		return nil, nil, fmt.Errorf("%s (%s): %w", runDir, st.Phase, ErrNotRunning)
	}
	pidfd, err := unix.PidfdOpen(st.LeaderPID, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: leader %d: %w", runDir, st.LeaderPID, ErrNotRunning)
	}
	defer unix.Close(pidfd)
	p := "/proc/" + strconv.Itoa(st.LeaderPID) + "/root"
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", runDir, ErrNotRunning)
	}
	root := os.NewFile(uintptr(fd), p)
	var guest, host unix.Stat_t
	if err := unix.Fstat(fd, &guest); err != nil || unix.Stat("/", &host) != nil || (guest.Dev == host.Dev && guest.Ino == host.Ino) {
		root.Close()
		return nil, nil, fmt.Errorf("%s: the leader has no root of its own: %w", runDir, ErrNotRunning)
	}
	now, err := ReadState(runDir)
	if unix.PidfdSendSignal(pidfd, 0, nil, 0) != nil || err != nil || now.LeaderPID != st.LeaderPID || !now.SupervisorAlive() {
		root.Close()
		return nil, nil, fmt.Errorf("%s: the machine stopped: %w", runDir, ErrNotRunning)
	}
	return root, st.Users, nil
}
