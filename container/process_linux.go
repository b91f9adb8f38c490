package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// applyRlimits sets the init stage pid's resource limits from the host
// (prlimit(2)), where the supervisor may raise a hard limit that a root in
// the machine's user namespace could not. Equivalent to `prlimit --pid PID
// --nofile=SOFT:HARD`.
func applyRlimits(pid int, rl []Rlimit) error {
	for _, r := range rl {
		res, _ := r.resource()
		if err := unix.Prlimit(pid, res, &unix.Rlimit{Cur: r.Soft, Max: r.Hard}, nil); err != nil {
			return fmt.Errorf("rlimits: set %s of PID 1 to %d (soft), %d (hard): %w", r.Type, r.Soft, r.Hard, err)
		}
	}
	return nil
}

// setProcessLimits gives PID 1, on the thread that execs or forks the
// guest's program, what the config asks of it before it starts: its
// resource limits, already set by the supervisor (applyRlimits) and set here
// again through syscall.Setrlimit, so that Go's runtime, which raised its own
// RLIMIT_NOFILE at start, does not put back the one it found in the process
// it forks; and no_new_privs, which is per thread and inherited.
func setProcessLimits(cfg Config) error {
	for _, r := range cfg.Rlimits {
		res, _ := r.resource()
		if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: r.Soft, Max: r.Hard}); err != nil {
			return fmt.Errorf("rlimits: set %s to %d (soft), %d (hard): %w", r.Type, r.Soft, r.Hard, err)
		}
	}
	if cfg.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("noNewPrivileges: %w", err)
		}
	}
	return nil
}

// commandCredentials are the application-mode command's user, groups and
// ambient capabilities, which Go's fork sets between fork and exec
// (setgroups, setgid, setuid keeping the capabilities the ambient set
// needs, then PR_CAP_AMBIENT_RAISE).
func commandCredentials(cfg Config) *syscall.SysProcAttr {
	sys := &syscall.SysProcAttr{}
	if u := cfg.User; u != nil {
		sys.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
		if sys.Credential.Groups == nil {
			sys.Credential.Groups = []uint32{}
		}
	}
	for _, c := range cfg.AmbientCaps {
		if b, err := capBits("ambientCaps", c); err == nil {
			for i := uintptr(0); i < 64; i++ {
				if b&(1<<i) != 0 {
					sys.AmbientCaps = append(sys.AmbientCaps, i)
				}
			}
		}
	}
	return sys
}

// credentialCaps are the capabilities the command's fork needs, beyond the
// bounding set, to become cfg.User (setgroups, setgid, setuid): a bounding
// set without them, as an OCI bundle's often is, must still let the
// command change its user. Its exec drops them again: root's permitted set
// after it is the bounding set, another user's its ambient set.
func credentialCaps(cfg Config) uint64 {
	if cfg.User == nil {
		return 0
	}
	return 1<<unix.CAP_SETUID | 1<<unix.CAP_SETGID
}

// startedAs says, for an error, as whom and where the command was started
// when that is not root in /.
func startedAs(cfg Config) string {
	var b strings.Builder
	if u := cfg.User; u != nil {
		fmt.Fprintf(&b, " as uid %d, gid %d", u.UID, u.GID)
	}
	if cfg.WorkingDir != "" && cfg.WorkingDir != "/" {
		fmt.Fprintf(&b, " in %s", cfg.WorkingDir)
	}
	return b.String()
}

// maskPaths masks and makes read-only the config's extra paths below /proc
// and /sys of the tree at root (run is its /run, where /run/host's
// inaccessible nodes are), as runc does for an OCI bundle's maskedPaths and
// readonlyPaths: a file gets the empty inaccessible file bound on it, a
// directory the empty inaccessible directory; a path this kernel does not
// have is skipped.
func maskPaths(cfg Config, root, run string) error {
	for _, p := range cfg.MaskedPaths {
		r, err := inRoot(root, p)
		if err != nil {
			return err
		}
		st, err := os.Stat(r)
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			return fmt.Errorf("maskedPaths: %w", err)
		}
		src := filepath.Join(run, "host/inaccessible/reg")
		if st.IsDir() {
			src = filepath.Join(run, "host/inaccessible/dir")
		}
		// Read-only too: the inaccessible nodes live on the machine's /run.
		if err := mount(src, r, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("maskedPaths: %w", err)
		}
		if err := mount("", r, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("maskedPaths: %w", err)
		}
	}
	for _, p := range cfg.ReadOnlyPaths {
		r, err := inRoot(root, p)
		if err != nil {
			return err
		}
		if _, err := os.Stat(r); os.IsNotExist(err) {
			continue
		}
		if err := bindRO(r, true); err != nil {
			return fmt.Errorf("readOnlyPaths: %w", err)
		}
	}
	return nil
}
