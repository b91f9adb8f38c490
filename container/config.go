package container

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/internal/rundir"

	"github.com/berthd/berth/internal/syscalls"
)

// DefaultPidsMax is a machine's task limit when none is given:
// systemd-nspawn@.service's TasksMax=, so a fork bomb stops inside the machine
// long before the host's pid_max.
const DefaultPidsMax = 16384

// ErrInvalid marks a Config that cannot run as given; the message names the
// field. It is errdefs' class.
var ErrInvalid = errdefs.ErrInvalid

// Config is everything a supervisor needs to run one machine. It is plain data:
// berthd writes it as JSON to RUN/machines/NAME/config.json for the detached
// supervisor, and `berth boot` builds it from flags.
type Config struct {
	Name string `json:"name"`
	// UUID is the machine's 128-bit ID as 32 hex digits. The guest sees it as
	// $container_uuid (systemd seeds an empty /etc/machine-id from it) and in
	// /run/host/container-uuid.
	UUID string `json:"uuid"`
	Root Root   `json:"root"`
	// Boot runs an init system as PID 1 (systemd-nspawn -b). Without it Args is an
	// application command run under berth's minimal reaper as PID 1.
	Boot bool `json:"boot"`
	// Init is the init to exec when booting; empty detects
	// /usr/lib/systemd/systemd, /lib/systemd/systemd, /sbin/init in that order.
	Init string `json:"init,omitempty"`
	// Args are the init's arguments when booting, or the command (Args[0] is the
	// program) in application mode.
	Args []string `json:"args,omitempty"`
	// Env is extra KEY=VALUE environment for the init or command; a key
	// berth sets too (PATH, TERM, HOME …) takes this value.
	Env      []string `json:"env,omitempty"`
	Hostname string   `json:"hostname,omitempty"` // default: Name
	// Credentials are the names of the machine's credentials, whose values
	// wait in rundir.Dir.Credentials (never in this file): the supervisor
	// reads them once and gives each boot a read-only ramfs of them at
	// /run/host/credentials, named by $CREDENTIALS_DIRECTORY (as nspawn).
	Credentials []string `json:"credentials,omitempty"`
	Mounts      []Mount  `json:"mounts,omitempty"`
	// WorkingDir is where the init or command starts, a path inside the
	// machine (default /). The command enters it as its User.
	WorkingDir string `json:"workingDir,omitempty"`
	// User runs the application-mode command as this user instead of the
	// machine's root (an OCI bundle's process.user). nil: root.
	User *User `json:"user,omitempty"`
	// AmbientCaps are capabilities the application-mode command holds in its
	// ambient set, so that a non-root User keeps them across exec (an OCI
	// bundle's process.capabilities.ambient). Each must be in the bounding
	// set.
	AmbientCaps []string `json:"ambientCaps,omitempty"`
	// NoNewPrivileges sets no_new_privs on the init or command: setuid
	// programs and file capabilities grant nothing in the machine.
	NoNewPrivileges bool `json:"noNewPrivileges,omitempty"`
	// Rlimits are PID 1's resource limits, set before the init or command
	// starts; every process of the machine inherits them.
	Rlimits []Rlimit `json:"rlimits,omitempty"`
	// MaskedPaths and ReadOnlyPaths are paths below /proc and /sys that are
	// masked (an empty, inaccessible file or directory bound on them) or made
	// read-only, on top of berth's own masks; a path the kernel does not have
	// is skipped.
	MaskedPaths   []string `json:"maskedPaths,omitempty"`
	ReadOnlyPaths []string `json:"readOnlyPaths,omitempty"`
	// Resources are applied to the machine's cgroup by the cgroup driver.
	Resources Resources `json:"resources,omitempty"`
	// CapAdd and CapDrop adjust nspawn's default bounding set ("CAP_NET_ADMIN" or
	// "net_admin"; "all" in CapAdd keeps every capability).
	CapAdd  []string `json:"capAdd,omitempty"`
	CapDrop []string `json:"capDrop,omitempty"`
	// NetworkMode is "private" (a new network namespace with only loopback until
	// the Network hook adds links; the default) or "host".
	NetworkMode string `json:"networkMode,omitempty"`
	// Users runs the machine in a user namespace of its own: its UIDs and
	// GIDs 0…Size-1 are the host's Base…Base+Size-1. nil: the host's (the
	// machine's root is the host's root).
	Users *Users `json:"users,omitempty"`
	// StopTimeout is how long a clean poweroff may take before everything in the
	// machine's cgroup is killed. Default 30 s.
	StopTimeout time.Duration `json:"stopTimeout,omitempty"`
	// PoweroffSignal is sent to PID 1 for a clean poweroff; 0 picks it from the
	// init: SIGRTMIN+3 for systemd (and unknown inits), SIGUSR2 for busybox init,
	// SIGTERM for an application under berth's reaper.
	PoweroffSignal int `json:"poweroffSignal,omitempty"`
	// ConsoleLog receives everything the guest writes on its console (capped at
	// ConsoleLogMax, then rotated to .1). Default /var/log/berth/NAME.console.log.
	ConsoleLog    string `json:"consoleLog,omitempty"`
	ConsoleLogMax int64  `json:"consoleLogMax,omitempty"`
	// Console is "pty" (default: /dev/console is a pty whose master the
	// supervisor keeps) or "passthrough" (application mode only: the command
	// inherits the supervisor's stdin, stdout and stderr, byte for byte).
	Console string `json:"console,omitempty"`
	// RuntimeDir is RUN/machines/NAME: config.json, state.json, control.sock,
	// notify.
	RuntimeDir string `json:"runtimeDir"`
	// AllowTun creates /dev/net/tun and allows it in the device policy.
	AllowTun bool `json:"allowTun,omitempty"`
	// SyscallFilter changes berth's system call allow-list in
	// systemd-nspawn's SystemCallFilter= syntax: "name" or "@group" allows,
	// "~name" or "~@group" refuses, in order.
	SyscallFilter []string `json:"syscallFilter,omitempty"`
	// SeccompOptional and DeviceFenceOptional let the machine start where the
	// kernel cannot filter its system calls or fence its devices; without
	// them such a machine is refused (never a silent downgrade).
	SeccompOptional     bool `json:"seccompOptional,omitempty"`
	DeviceFenceOptional bool `json:"deviceFenceOptional,omitempty"`

	// Readiness "notify": the application gets $NOTIFY_SOCKET and the machine
	// is booting until it sends READY=1, as a Type=notify service; it is
	// killed (reason ReasonNotReady) when ReadyTimeout passes first. ""
	// (none): running once the command is exec'd.
	Readiness    string        `json:"readiness,omitempty"`
	ReadyTimeout time.Duration `json:"readyTimeout,omitempty"`
	// HealthCheck is a command the supervisor runs inside the machine over
	// and over; nil: none.
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
}

// Users is a machine's range of host UIDs and GIDs.
type Users struct {
	Base uint32 `json:"base"`
	Size uint32 `json:"size"`
	// Shifted says the root's files are owned Base… on disk already (the
	// one-time shift where the filesystem cannot idmap): the root is mounted
	// as it is. Otherwise the root's layers are idmapped into the range.
	Shifted bool `json:"shifted,omitempty"`
	// Why says why a shifted root is not idmapped (berth status shows it).
	Why string `json:"why,omitempty"`
}

// Root is the machine's root filesystem: a directory, or an overlay that the
// payload mounts inside its own mount namespace (so nothing stays mounted on the
// host when the machine ends).
type Root struct {
	Dir      string   `json:"dir,omitempty"`
	Overlay  *Overlay `json:"overlay,omitempty"`
	ReadOnly bool     `json:"readOnly,omitempty"`
}

// Overlay is an overlayfs root: Lower layers (top first, as overlayfs's
// lowerdir), a writable Upper and its Work directory on the same filesystem.
// With Scratch instead of Upper and Work, the machine is ephemeral: its upper
// layer is a tmpfs of at most Scratch bytes that the supervisor mounts for
// each boot in the mount namespace it builds the tree in, so the machine's
// changes are gone when that boot ends, a crash included, with nothing to
// clean up on the host (systemd-nspawn --volatile=overlay's shape over an
// image, not --ephemeral's copy of the tree).
type Overlay struct {
	Lower   []string `json:"lower"`
	Upper   string   `json:"upper,omitempty"`
	Work    string   `json:"work,omitempty"`
	Scratch int64    `json:"scratch,omitempty"`
	// Seed is a directory on the host whose tree is copied onto the
	// scratch layer at each boot (files berth gives the machine).
	Seed string `json:"seed,omitempty"`
}

// Mount is a bind or tmpfs mount in the machine. Target is a path inside the
// machine; it is resolved inside the root so a symlink cannot lead it out.
type Mount struct {
	Type     string `json:"type"` // "bind" or "tmpfs"
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	Options  string `json:"options,omitempty"` // extra tmpfs options
	Size     int64  `json:"size,omitempty"`    // tmpfs size in bytes
	Mode     uint32 `json:"mode,omitempty"`    // tmpfs mode, default 0755
	// Idmap shows a bind's host owners unchanged inside a machine with
	// Users (an idmapped bind); without it the guest sees the unmapped view.
	Idmap bool `json:"idmap,omitempty"`
}

// Hooks let the wiring (machined) join other packages into a supervisor without
// this package importing them. Every field is optional.
type Hooks struct {
	// Cgroups makes the machine's cgroup; nil uses the cgroupfs driver.
	Cgroups CgroupDriver
	// Network runs after the payload exists in its namespaces (pid is its PID on
	// the host) and before its init stage continues: the place to move a veth in.
	// It runs at every boot (a reboot makes a new network namespace), and not
	// with networkMode "host".
	Network func(ctx context.Context, pid int) error
	// Started runs once the payload's init has been exec'd, on every boot
	// (registration with systemd-machined). An error stops the machine.
	Started func(ctx context.Context, s Started) error
	// Stopped runs once when the machine has ended, on every exit path once the
	// supervisor has taken the machine over, after the payload is gone and
	// before the cgroup is removed. It does not run when Supervise refused to
	// start at all: an invalid config, or the machine already running under
	// another supervisor (whose registration must stay).
	Stopped func(ctx context.Context, st ExitStatus)
	// Logger receives the supervisor's log; nil uses slog.Default().
	Logger *slog.Logger
}

// Started describes a payload that has just started.
type Started struct {
	Name          string
	UUID          string
	SupervisorPID int
	LeaderPID     int    // the guest's PID 1, as seen on the host
	CgroupPath    string // the machine's cgroup (below each hierarchy's root)
	Boots         int    // 1 for the first boot, 2 after the first reboot …
}

// ReadinessNotify is Config.Readiness for an application that sends READY=1.
const ReadinessNotify = "notify"

// Exit reasons.
const (
	ReasonPoweroff   = "poweroff"          // the guest powered off or halted (exit 0)
	ReasonExited     = "exited"            // init or the application exited with Code
	ReasonKilled     = "killed"            // berth killed it (stop timeout, kill, terminate)
	ReasonCrashed    = "crashed"           // PID 1 died of a signal berth did not send
	ReasonRebootLoop = "reboot loop ended" // too many reboots in a short time
	ReasonFailed     = "failed"            // the supervisor could not start it
	ReasonUnhealthy  = "unhealthy"         // its health check failed Retries times and KillUnhealthy asked for a kill
	ReasonNotReady   = "not ready"         // readiness notify: no READY=1 within ReadyTimeout
)

// ExitStatus is how a machine ended. Code is the machine's exit code: 0 after a
// poweroff, the application's exit code, or 128+signal.
type ExitStatus struct {
	Code   int    `json:"code"`
	Reason string `json:"reason"`
	Error  string `json:"error,omitempty"`
}

func (s ExitStatus) String() string {
	if s.Error != "" {
		return fmt.Sprintf("%s (exit %d): %s", s.Reason, s.Code, s.Error)
	}
	return fmt.Sprintf("%s (exit %d)", s.Reason, s.Code)
}

var uuidRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

// NormalizeUUID accepts 32 hex digits or the dashed 8-4-4-4-12 form and returns
// 32 lower-case hex digits.
func NormalizeUUID(s string) (string, error) {
	u := strings.ToLower(strings.ReplaceAll(s, "-", ""))
	if !uuidRe.MatchString(u) || u == strings.Repeat("0", 32) {
		return "", fmt.Errorf("%w: machine ID %q: want 32 hex digits (as in /etc/machine-id), not all zero", ErrInvalid, s)
	}
	return u, nil
}

// dashedUUID formats 32 hex digits as 8-4-4-4-12, the form of $container_uuid.
func dashedUUID(u string) string {
	return u[0:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:32]
}

// withDefaults returns cfg with defaults filled in and checks it. Errors name the
// field and what to change.
func (cfg Config) withDefaults() (Config, error) {
	for _, step := range []func() error{cfg.checkIdentity, cfg.checkProcess, cfg.setModes, cfg.checkIsolation, cfg.checkCredentials, cfg.setRuntime} {
		if err := step(); err != nil {
			return cfg, fmt.Errorf("machine %q: %w: %v", cfg.Name, ErrInvalid, err)
		}
	}
	return cfg, nil
}

// checkIdentity checks the name, the UUID and the root.
func (cfg *Config) checkIdentity() error {
	if err := rundir.CheckName(cfg.Name); err != nil {
		return fmt.Errorf("name: %v", err)
	}
	u, err := NormalizeUUID(cfg.UUID)
	if err != nil {
		return fmt.Errorf("uuid: %v", err)
	}
	cfg.UUID = u
	return cfg.Root.check()
}

// checkProcess checks what runs as PID 1 and the hostname.
func (cfg *Config) checkProcess() error {
	if !cfg.Boot && len(cfg.Args) == 0 {
		return fmt.Errorf("args: application mode (boot: false) needs a command")
	}
	if !cfg.Boot && cfg.Args[0] != "" && !strings.HasPrefix(cfg.Args[0], "/") {
		return fmt.Errorf("args: command %q must be an absolute path inside the machine", cfg.Args[0])
	}
	if cfg.Init != "" && !strings.HasPrefix(cfg.Init, "/") {
		return fmt.Errorf("init %q: must be an absolute path inside the machine", cfg.Init)
	}
	if cfg.Hostname == "" {
		cfg.Hostname = cfg.Name
	}
	if len(cfg.Hostname) > 64 {
		return fmt.Errorf("hostname %q: at most 64 characters", cfg.Hostname)
	}
	return nil
}

// setModes checks and defaults the network, user and console modes.
func (cfg *Config) setModes() error {
	switch cfg.NetworkMode {
	case "":
		cfg.NetworkMode = "private"
	case "private", "host":
	default:
		return fmt.Errorf("networkMode %q: want \"private\" or \"host\"", cfg.NetworkMode)
	}
	if u := cfg.Users; u != nil {
		if u.Size == 0 {
			u.Size = 65536
		}
		if u.Base == 0 || uint64(u.Base)+uint64(u.Size) > 1<<32-1 {
			return fmt.Errorf("users: base %d, size %d: want a range of host IDs above 0 that ends before 4294967295", u.Base, u.Size)
		}
	}
	switch cfg.Console {
	case "":
		cfg.Console = "pty"
	case "pty":
	case "passthrough":
		if cfg.Boot {
			return fmt.Errorf("console: passthrough is only for application mode; a booted machine needs a pty console")
		}
	default:
		return fmt.Errorf("console %q: want \"pty\" or \"passthrough\"", cfg.Console)
	}
	return nil
}

// checkIsolation checks the mounts, capabilities and system call filter, and
// defaults the task limit.
func (cfg *Config) checkIsolation() error {
	for i, m := range cfg.Mounts {
		if err := m.check(); err != nil {
			return fmt.Errorf("mounts[%d]%v", i, err)
		}
	}
	if _, err := capMask(cfg.CapAdd, cfg.CapDrop, cfg.NetworkMode == "private"); err != nil {
		return err
	}
	for i, e := range cfg.SyscallFilter {
		if err := syscalls.CheckEntry(e); err != nil {
			return fmt.Errorf("syscallFilter[%d]: %v", i, err)
		}
	}
	if cfg.Resources.PidsMax == 0 {
		cfg.Resources.PidsMax = DefaultPidsMax
	}
	return nil
}

// setRuntime checks the runtime directory and defaults the stop timeout and
// the console log.
func (cfg *Config) setRuntime() error {
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if cfg.RuntimeDir == "" || !filepath.IsAbs(cfg.RuntimeDir) {
		return fmt.Errorf("runtimeDir %q: an absolute directory is required (RUN/machines/NAME)", cfg.RuntimeDir)
	}
	// sockaddr_un holds 108 bytes: the notify and control sockets live here.
	if len(cfg.RuntimeDir) > rundir.MaxLen {
		return fmt.Errorf("runtimeDir %q: too long for a unix socket path (at most %d bytes)", cfg.RuntimeDir, rundir.MaxLen)
	}
	if cfg.ConsoleLog == "" {
		cfg.ConsoleLog = rundir.ConsoleLog("/var/log/berth", cfg.Name)
	}
	if cfg.ConsoleLogMax <= 0 {
		cfg.ConsoleLogMax = 4 << 20
	}
	return nil
}

// check says what is wrong with a root, naming the field.
func (r Root) check() error {
	switch {
	case r.Dir != "" && r.Overlay != nil:
		return fmt.Errorf("root: give either dir or overlay, not both")
	case r.Dir != "":
		if !filepath.IsAbs(r.Dir) {
			return fmt.Errorf("root.dir %q: must be an absolute path", r.Dir)
		}
		if st, err := os.Stat(r.Dir); err != nil || !st.IsDir() {
			return fmt.Errorf("root.dir %q: not a directory", r.Dir)
		}
	case r.Overlay != nil:
		o := r.Overlay
		switch {
		case o.Scratch < 0:
			return fmt.Errorf("root.overlay.scratch: %d is not a size", o.Scratch)
		case o.Scratch > 0 && (o.Upper != "" || o.Work != ""):
			return fmt.Errorf("root.overlay: give either scratch or upper and work, not both")
		case len(o.Lower) == 0 || (o.Scratch == 0 && (o.Upper == "" || o.Work == "")):
			return fmt.Errorf("root.overlay: lower, and upper and work (or scratch), are required")
		}
		paths := o.Lower
		if o.Seed != "" {
			paths = append(append([]string{}, o.Lower...), o.Seed)
		}
		if o.Scratch == 0 {
			paths = append(append([]string{}, o.Lower...), o.Upper, o.Work)
		}
		for _, p := range paths {
			if !filepath.IsAbs(p) || strings.ContainsAny(p, ",:") {
				return fmt.Errorf("root.overlay: %q must be an absolute path without ',' or ':'", p)
			}
		}
	default:
		return fmt.Errorf("root: a directory or an overlay is required")
	}
	return nil
}

// check says what is wrong with a mount; the message starts with the field
// (".target …") for the caller to put "mounts[i]" before.
func (m Mount) check() error {
	if !filepath.IsAbs(m.Target) || filepath.Clean(m.Target) == "/" {
		return fmt.Errorf(".target %q: must be an absolute path other than /", m.Target)
	}
	switch m.Type {
	case "bind":
		if !filepath.IsAbs(m.Source) {
			return fmt.Errorf(".source %q: must be an absolute path on the host", m.Source)
		}
		if _, err := os.Stat(m.Source); err != nil {
			return fmt.Errorf(".source %q: %v", m.Source, err)
		}
	case "tmpfs":
	default:
		return fmt.Errorf(".type %q: want \"bind\" or \"tmpfs\"", m.Type)
	}
	return nil
}
