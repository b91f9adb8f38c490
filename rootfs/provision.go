package rootfs

import (
	"fmt"
	"path/filepath"
	"time"
)

// Provision runs write on the stopped machine's root, mounted (MountStopped),
// once in the root's life: before its first boot. The root's root.json
// records that it was done (Root.Provisioned), also when there was nothing to
// write (write nil), so files a definition gains later never land in a root
// that has booted. A failed write records nothing: the next start tries again.
// It reports whether it wrote.
func (s *Store) Provision(machine string, write func(m *Mounted) error) (bool, error) {
	r, err := s.Root(machine)
	if err != nil || r.Provisioned != nil {
		return false, err
	}
	var m *Mounted
	if write != nil {
		if m, err = s.MountStopped(machine); err != nil {
			return false, err
		}
	} else {
		lock, err := s.lockRoot(machine, "")
		if err != nil {
			return false, err
		}
		m = &Mounted{lock: lock}
	}
	defer m.Close()
	if write != nil {
		if err := write(m); err != nil {
			return false, fmt.Errorf("machine %q: files: %w", machine, err)
		}
	}
	// Read again under the lock: a shift may have rewritten it meanwhile.
	if r, err = s.Root(machine); err != nil {
		return false, err
	}
	now := time.Now().UTC()
	r.Provisioned = &now
	if err := writeJSON(filepath.Join(r.Path, rootMetaFile), r); err != nil {
		return false, fmt.Errorf("machine %q: %w", machine, err)
	}
	return write != nil, nil
}
