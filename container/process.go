package container

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// User is who the application-mode command runs as (an OCI bundle's
// process.user): IDs of the machine, inside its user namespace when it has
// one. Groups are the supplementary groups; none when empty.
type User struct {
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"`
}

// Rlimit is one resource limit (setrlimit(2)) of the machine's PID 1, which
// everything in the machine inherits. Type is "RLIMIT_NOFILE" or "nofile"
// (any case); Soft and Hard are the kernel's values, RLIM_INFINITY being
// 18446744073709551615.
type Rlimit struct {
	Type string `json:"type"`
	Soft uint64 `json:"soft"`
	Hard uint64 `json:"hard"`
}

// rlimitTypes are the resources setrlimit(2) knows, by their names without
// "RLIMIT_" in lower case.
var rlimitTypes = map[string]int{
	"as": unix.RLIMIT_AS, "core": unix.RLIMIT_CORE, "cpu": unix.RLIMIT_CPU, "data": unix.RLIMIT_DATA,
	"fsize": unix.RLIMIT_FSIZE, "locks": unix.RLIMIT_LOCKS, "memlock": unix.RLIMIT_MEMLOCK,
	"msgqueue": unix.RLIMIT_MSGQUEUE, "nice": unix.RLIMIT_NICE, "nofile": unix.RLIMIT_NOFILE,
	"nproc": unix.RLIMIT_NPROC, "rss": unix.RLIMIT_RSS, "rtprio": unix.RLIMIT_RTPRIO,
	"rttime": unix.RLIMIT_RTTIME, "sigpending": unix.RLIMIT_SIGPENDING, "stack": unix.RLIMIT_STACK,
}

// resource is the setrlimit(2) resource of r.Type.
func (r Rlimit) resource() (int, bool) {
	n, ok := rlimitTypes[strings.TrimPrefix(strings.ToLower(r.Type), "rlimit_")]
	return n, ok
}

// checkCredentials checks who the command runs as, what it keeps and where
// it starts: user, ambientCaps, noNewPrivileges, workingDir, rlimits, and the
// extra masked and read-only paths. Run after setModes (the user range's
// size) and checkIsolation (the bounding set).
func (cfg *Config) checkCredentials() error {
	if err := cfg.checkUser(); err != nil {
		return err
	}
	if cfg.WorkingDir != "" && (!filepath.IsAbs(cfg.WorkingDir) || filepath.Clean(cfg.WorkingDir) != cfg.WorkingDir) {
		return fmt.Errorf("workingDir %q: must be a clean absolute path inside the machine", cfg.WorkingDir)
	}
	if err := checkRlimits(cfg.Rlimits); err != nil {
		return err
	}
	for field, paths := range map[string][]string{"maskedPaths": cfg.MaskedPaths, "readOnlyPaths": cfg.ReadOnlyPaths} {
		for i, p := range paths {
			if filepath.Clean(p) != p || !(strings.HasPrefix(p, "/proc/") || strings.HasPrefix(p, "/sys/")) {
				return fmt.Errorf("%s[%d] %q: berth masks or makes read-only only clean absolute paths below /proc and /sys", field, i, p)
			}
		}
	}
	return nil
}

// checkUser checks the user and its ambient capabilities: application mode
// only, IDs the machine has, capabilities within the bounding set.
func (cfg *Config) checkUser() error {
	if cfg.Boot && cfg.User != nil {
		return fmt.Errorf("user: only for application mode; a booted init runs as the machine's root")
	}
	if cfg.Boot && len(cfg.AmbientCaps) > 0 {
		return fmt.Errorf("ambientCaps: only for application mode")
	}
	if u := cfg.User; u != nil {
		if len(u.Groups) > 65536 {
			return fmt.Errorf("user.groups: %d groups, at most 65536 (NGROUPS_MAX)", len(u.Groups))
		}
		ids := map[string]uint32{"user.uid": u.UID, "user.gid": u.GID}
		for i, g := range u.Groups {
			ids[fmt.Sprintf("user.groups[%d]", i)] = g
		}
		for field, id := range ids {
			if id == 1<<32-1 {
				return fmt.Errorf("%s: 4294967295 is no ID ((uid_t)-1)", field)
			}
			if cfg.Users != nil && id >= cfg.Users.Size {
				return fmt.Errorf("%s %d: the machine's user namespace has the IDs 0…%d only", field, id, cfg.Users.Size-1)
			}
		}
	}
	bnd, _ := capMask(cfg.CapAdd, cfg.CapDrop, cfg.NetworkMode == "private")
	for i, c := range cfg.AmbientCaps {
		b, err := capBits(fmt.Sprintf("ambientCaps[%d]", i), c)
		if err != nil {
			return err
		}
		if b&bnd != b {
			return fmt.Errorf("ambientCaps[%d] %q: not in the machine's bounding set (add it with capAdd)", i, c)
		}
	}
	return nil
}

// Check says what is wrong with one limit: a type setrlimit(2) does not
// know, or a soft limit above the hard one.
func (r Rlimit) Check() error {
	if _, ok := r.resource(); !ok {
		names := make([]string, 0, len(rlimitTypes))
		for n := range rlimitTypes {
			names = append(names, "RLIMIT_"+strings.ToUpper(n))
		}
		sort.Strings(names)
		return fmt.Errorf("type %q: want one of %s", r.Type, strings.Join(names, ", "))
	}
	if r.Soft > r.Hard {
		return fmt.Errorf("%s: soft limit %d above the hard limit %d", r.Type, r.Soft, r.Hard)
	}
	return nil
}

// checkRlimits checks each limit and refuses a type given twice.
func checkRlimits(rl []Rlimit) error {
	seen := map[int]bool{}
	for i, r := range rl {
		if err := r.Check(); err != nil {
			return fmt.Errorf("rlimits[%d]: %v", i, err)
		}
		res, _ := r.resource()
		if seen[res] {
			return fmt.Errorf("rlimits[%d]: type %q given twice", i, r.Type)
		}
		seen[res] = true
	}
	return nil
}

// mergeEnv returns env with each KEY=VALUE's key once: the last one given
// wins, in the place of the first (a program's getenv may take either).
func mergeEnv(env []string) []string {
	at := map[string]int{}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := at[k]; ok {
			out[i] = kv
			continue
		}
		at[k] = len(out)
		out = append(out, kv)
	}
	return out
}
