package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/berthd/berth/internal/rundir"
)

// ClaimRuntimeDir makes the machine's runtime directory d ready for a
// foreground supervisor (`berth boot`) and returns what removes it again at
// the end. A directory of a running machine is refused. The directory is
// removed only if this claim made it, or if it held nothing but an earlier
// supervisor's leftovers (one killed before it could clean up); and only file
// by file, never recursively: a directory berthd keeps for a machine of its
// own (config.json, logs) stays.
func ClaimRuntimeDir(d rundir.Dir) (release func(), err error) {
	dir, name := d.Path(), d.Name()
	if filepath.Base(filepath.Dir(dir)) != rundir.MachinesDir {
		return nil, fmt.Errorf("boot: runtime directory %s is not RUNTIME/%s/%s", dir, rundir.MachinesDir, name)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, fmt.Errorf("boot: runtime directory: %w", err)
	}
	owned := true
	if err := os.Mkdir(dir, 0o700); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("boot: runtime directory: %w", err)
		}
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("boot: %s exists and is not a directory; remove it or pick another --name", dir)
		}
		if st, err := ReadState(dir); err == nil && st.SupervisorAlive() {
			return nil, fmt.Errorf("boot: machine %q is already running (supervisor PID %d); pick another --name", name, st.SupervisorPID)
		}
		owned = onlyLeftovers(d)
	}
	return func() {
		if !owned {
			return
		}
		// A supervisor that took the directory over meanwhile keeps it.
		if st, err := ReadState(dir); err == nil && st.SupervisorPID != os.Getpid() && st.SupervisorAlive() {
			return
		}
		for _, f := range d.SupervisorFiles() {
			_ = os.Remove(f)
		}
		tmps, _ := filepath.Glob(d.StateTempPattern())
		for _, f := range tmps {
			_ = os.Remove(f)
		}
		_ = os.Remove(dir)
	}, nil
}

// onlyLeftovers reports whether d holds nothing but a supervisor's files.
func onlyLeftovers(d rundir.Dir) bool {
	ents, err := os.ReadDir(d.Path())
	if err != nil {
		return false
	}
	for _, e := range ents {
		p := filepath.Join(d.Path(), e.Name())
		if tmp, _ := filepath.Match(d.StateTempPattern(), p); !slices.Contains(d.SupervisorFiles(), p) && !tmp {
			return false
		}
	}
	return true
}
