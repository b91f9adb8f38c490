package rootfs

import (
	"fmt"

	"github.com/berthd/berth/rootfs/hold"
)

// lockFile is the name of a root's (and a snapshot directory's) lock file.
const lockFile = hold.LockFile

// RootLock is an exclusive hold on a machine's root: the machine's supervisor
// holds one for the machine's whole life (taken with package hold, the same
// lock), and remove and clone take one to be sure the machine is not running.
type RootLock = hold.Root

// LockRoot takes the machine's root lock without waiting. It fails with an error
// matching ErrBusy, naming the holder's PID, when another process (a running
// machine's supervisor, or a remove or clone in progress) holds it, and with
// ErrNotFound when the machine has no root.
func (s *Store) LockRoot(machine string) (*RootLock, error) {
	return s.lockRoot(machine, "")
}

// lockRoot is LockRoot with the refused action named in the error ("remove it").
func (s *Store) lockRoot(machine, action string) (*RootLock, error) {
	if err := ValidName(machine); err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	// A root made before lock files existed, or one whose lock file was
	// deleted by hand, gets one; a missing root is the error Root gives.
	return hold.LockRoot(s.dir, machine, action, func() error {
		_, err := s.Root(machine)
		return err
	})
}
