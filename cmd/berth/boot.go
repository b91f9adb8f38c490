package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/userns"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
	"github.com/berthd/berth/supervisor"
)

// bootOpts are berth boot's flags.
type bootOpts struct {
	dir, name, machineID, hostname, init, network, consoleLog string
	privateUsers, ociBundle                                   string
	binds, tmpfs, setenv, capAdd, capDrop, syscallFilter      []string
	memoryMax, ephemeralSize                                  string
	pidsMax                                                   int64
	cpus                                                      float64
	readOnly, boot, seccompOptional, deviceFenceOptional      bool
	ephemeral                                                 bool
	stopTimeout                                               time.Duration
}

var bootFlags bootOpts

func newBootCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "boot {-D DIR | --oci-bundle DIR} [flags] [-- COMMAND [ARG...] | --boot -- INIT-ARG...]",
		Short: "Run a machine from a directory in the foreground (like systemd-nspawn -D DIR -b)",
		Long: `Run a machine from a directory in the foreground, no daemon needed.

Without a command, boots the tree's init (/usr/lib/systemd/systemd, /lib/systemd/systemd
or /sbin/init, or --init) as PID 1 with the terminal on its console. With a command after
--, runs it as the machine's application (under a minimal reaper as PID 1); its exit code
becomes berth's. --boot with arguments after -- boots and passes them to the init.

On a terminal the console is interactive: press Ctrl-] three times within a second to
kill the machine at once. Without a terminal the console output is streamed to stdout;
an application then gets berth's own stdin, stdout and stderr, byte for byte.
SIGTERM or SIGINT to berth powers the machine off cleanly (then kills it after
--stop-timeout). berth exits with the machine's exit code: 0 after a poweroff.

With --oci-bundle DIR, runs an OCI runtime bundle (DIR/config.json and the root
filesystem it names, as runc spec or umoci unpack make it) as systemd-nspawn
--oci-bundle does: its process, user, environment, working directory, terminal,
hostname, mounts, namespaces, ID mappings, capabilities, rlimits and resources. A field
of config.json that berth cannot carry out is an error that names it. Flags given
beside it override the bundle (--hostname, --memory-max, --network …) or add to it
(--bind, --setenv, --capability …); a command after -- replaces process.args.

The machine's runtime directory is RUNTIME-DIR/machines/NAME (RUNTIME-DIR is the global
--runtime-dir, default /run/berth); berth removes it when the machine ends, if it made it.`,
		Example: `  berth boot -D /var/lib/machines/web
  berth boot -D ./root --bind /srv/data:/data:ro --memory-max 512M
  berth boot -D ./root -- /bin/sh -c 'echo hello from $(hostname)'
  berth boot --oci-bundle ./bundle`,
		Args: cobra.ArbitraryArgs,
		RunE: runBoot,
	}
	f := c.Flags()
	f.StringVarP(&bootFlags.dir, "directory", "D", "", "root directory of the machine (this or --oci-bundle is required)")
	f.StringVar(&bootFlags.ociBundle, "oci-bundle", "", "run the OCI runtime bundle in DIR (config.json and its rootfs), as systemd-nspawn --oci-bundle=")
	f.StringVarP(&bootFlags.name, "name", "M", "", "machine name (default: the directory's name)")
	f.StringVar(&bootFlags.machineID, "machine-id", "", "machine ID, 32 hex digits (default: the tree's /etc/machine-id, else derived from the name)")
	f.StringVar(&bootFlags.hostname, "hostname", "", "hostname inside (default: the name)")
	f.StringVar(&bootFlags.init, "init", "", "init to boot (a path inside the machine)")
	f.BoolVarP(&bootFlags.boot, "boot", "b", false, "boot even when arguments follow -- (they go to the init)")
	f.StringArrayVar(&bootFlags.binds, "bind", nil, "bind mount SRC[:DST[:OPTIONS]] from the host, OPTIONS ro, rw, idmap (default: the host's owners inside), noidmap (repeatable)")
	f.StringVarP(&bootFlags.privateUsers, "private-users", "U", "pick", "pick: a private range of 65536 UIDs and GIDs, its root idmapped (like nspawn -U); a multiple of 65536: that range; off: the machine's root is the host's root")
	f.StringArrayVar(&bootFlags.tmpfs, "tmpfs", nil, "mount a tmpfs on DST (repeatable)")
	f.StringArrayVarP(&bootFlags.setenv, "setenv", "E", nil, "KEY=VALUE for the init or command (repeatable)")
	f.StringArrayVar(&bootFlags.capAdd, "capability", nil, "add a capability to the bounding set (repeatable, or 'all')")
	f.StringArrayVar(&bootFlags.capDrop, "drop-capability", nil, "drop a capability from the bounding set (repeatable)")
	f.StringVar(&bootFlags.memoryMax, "memory-max", "", "memory limit, e.g. 512M or 2G")
	f.Int64Var(&bootFlags.pidsMax, "pids-max", container.DefaultPidsMax, "limit on processes and threads (as systemd-nspawn@.service's TasksMax=)")
	f.StringArrayVar(&bootFlags.syscallFilter, "system-call-filter", nil, "change the system call allow-list: NAME or @GROUP allows, ~NAME or ~@GROUP refuses (repeatable, or space-separated, as nspawn's)")
	f.BoolVar(&bootFlags.seccompOptional, "seccomp-optional", false, "start even where the kernel has no seccomp filters (without a system call filter)")
	f.BoolVar(&bootFlags.deviceFenceOptional, "device-fence-optional", false, "start even where no device fence can be placed (no v1 device controller, no BPF device programs)")
	f.Float64Var(&bootFlags.cpus, "cpus", 0, "CPU quota in CPUs, e.g. 1.5")
	f.StringVar(&bootFlags.network, "network", "none", "none (own network namespace, loopback only) or host")
	f.BoolVar(&bootFlags.readOnly, "read-only", false, "mount the root read-only")
	f.BoolVarP(&bootFlags.ephemeral, "ephemeral", "x", false, "run on a throw-away layer over the directory (a tmpfs, see --ephemeral-size): the directory is never written, and what the machine writes is gone when it ends or reboots (like systemd-nspawn -x, without its copy)")
	f.StringVar(&bootFlags.ephemeralSize, "ephemeral-size", "1G", "with --ephemeral: the most the machine can write, e.g. 256M")
	f.DurationVar(&bootFlags.stopTimeout, "stop-timeout", 30*time.Second, "how long a poweroff may take before the machine is killed")
	f.StringVar(&bootFlags.consoleLog, "console-log", "", "console log file (default /var/log/berth/NAME.console.log)")
	return c
}

func runBoot(cmd *cobra.Command, args []string) error {
	// This process supervises the machine: its moves between cgroups are to
	// be cheap by the time it makes them (see container.WarmCgroupMoves).
	container.WarmCgroupMoves()
	cfg, err := bootConfigFor(cmd.Flags(), args)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	// berth boot is the machine's supervisor for as long as it runs: keep it
	// lean (see container.SuperviseStage).
	debug.SetGCPercent(25)
	debug.SetMemoryLimit(16 << 20)

	interactive := term.IsTerminal(int(os.Stdin.Fd())) && term.IsTerminal(int(os.Stdout.Fd()))
	// A bundle's process.terminal chose the console already.
	if cfg.Console == "" && !cfg.Boot && !interactive {
		cfg.Console = "passthrough"
	}
	// The supervisor's progress is for logs, not for the person at the
	// terminal: show warnings and errors only.
	// BERTH_LOG_LEVEL=debug shows every step, with timings.
	level := slog.LevelWarn
	_ = level.UnmarshalText([]byte(os.Getenv("BERTH_LOG_LEVEL")))
	hooks := container.Hooks{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))}
	// Before anything else: a running machine's directory is refused, and
	// release removes at the end only what this boot made.
	release, err := container.ClaimRuntimeDir(rundir.Dir(cfg.RuntimeDir))
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	defer release()
	if cfg.Users != nil {
		defer releaseBootRange(cfg.Name)
	}
	ctx, kill := context.WithCancel(context.Background())
	defer kill()
	// On a systemd host the machine gets its scope and systemd-machined
	// registration, as under berthd (and as nspawn does).
	if err := supervisor.BootHooks(ctx, &hooks, cfg); err != nil {
		return &exitError{code: 1, err: err}
	}
	// A closed terminal or output pipe must not kill the supervisor (which
	// would take the machine down uncleanly): a hangup powers the machine off,
	// and writes to a closed pipe just fail.
	signal.Ignore(syscall.SIGPIPE)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		<-hup
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}()

	var st container.ExitStatus
	switch {
	case cfg.Console == "passthrough":
		st, err = container.Supervise(ctx, cfg, hooks)
	case interactive:
		st, err = superviseTerminal(ctx, cfg, hooks, kill)
	default:
		st, err = container.SuperviseConsole(ctx, cfg, hooks, container.ConsoleIO{Out: os.Stdout})
	}
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	if st.Code != 0 {
		return &exitError{code: st.Code}
	}
	return nil
}

// superviseTerminal runs the machine with this terminal, in raw mode, on its
// console; Ctrl-] three times within a second calls kill.
func superviseTerminal(ctx context.Context, cfg container.Config, hooks container.Hooks, kill func()) (container.ExitStatus, error) {
	old, err := term.MakeRaw(int(os.Stdin.Fd()))
	if err != nil {
		return container.ExitStatus{}, fmt.Errorf("terminal: %w", err)
	}
	fmt.Fprintf(os.Stderr, "Booting machine %s. Press Ctrl-] three times within 1s to kill it.\r\n", cfg.Name)
	resized, stop := notifyResized()
	defer stop()
	st, err := container.SuperviseConsole(ctx, cfg, hooks, container.ConsoleIO{
		In:  &container.EscapeReader{R: os.Stdin, OnEscape: kill},
		Out: os.Stdout,
		Size: func() (uint16, uint16) {
			w, h, err := term.GetSize(int(os.Stdout.Fd()))
			if err != nil {
				return 0, 0
			}
			return uint16(h), uint16(w)
		},
		Resized: resized,
	})
	_ = term.Restore(int(os.Stdin.Fd()), old)
	fmt.Fprintf(os.Stderr, "\nMachine %s ended: %s.\n", cfg.Name, st)
	return st, err
}

// bootConfigFor is the machine berth boot runs: a bundle's with
// --oci-bundle, else the flags' (bootConfig).
func bootConfigFor(fs *pflag.FlagSet, args []string) (container.Config, error) {
	var cfg container.Config
	var err error
	if bootFlags.ociBundle != "" {
		cfg, err = ociBootConfig(fs, args)
	} else {
		cfg, err = bootConfig(args)
	}
	if err == nil && bootFlags.ephemeral {
		err = bootEphemeral(&cfg, bootFlags)
	}
	return cfg, err
}

// bootEphemeral puts the machine's writes on a throw-away tmpfs over its
// directory, which then stays as it is.
func bootEphemeral(cfg *container.Config, f bootOpts) error {
	if cfg.Root.ReadOnly {
		return fmt.Errorf("boot: --ephemeral and --read-only: choose one (an ephemeral root is writable, and its writes are thrown away)")
	}
	n, err := spec.ParseSize(f.ephemeralSize)
	if err != nil || n < 1<<20 {
		return fmt.Errorf("boot: --ephemeral-size %q: give a size of at least 1M, e.g. 256M or 2G", f.ephemeralSize)
	}
	cfg.Root = container.Root{Overlay: &container.Overlay{Lower: []string{cfg.Root.Dir}, Scratch: n.Bytes()}}
	return nil
}

// bootConfig turns the flags into a machine config; errors name the flag.
func bootConfig(args []string) (container.Config, error) {
	f := bootFlags
	var cfg container.Config
	if f.dir == "" {
		return cfg, fmt.Errorf("boot: -D DIR is required (the machine's root directory), or --oci-bundle DIR")
	}
	dir, err := filepath.Abs(f.dir)
	if err != nil {
		return cfg, err
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return cfg, fmt.Errorf("boot: -D %s: not a directory", f.dir)
	}
	name := f.name
	if name == "" {
		name = rundir.SanitizeName(filepath.Base(dir))
	}
	if err := rundir.CheckName(name); err != nil {
		return cfg, fmt.Errorf("boot: --name: %w", err)
	}
	id, err := machineID(f.machineID, dir, name)
	if err != nil {
		return cfg, err
	}
	cfg = container.Config{
		Name:                name,
		UUID:                id,
		Root:                container.Root{Dir: dir, ReadOnly: f.readOnly},
		Boot:                f.boot || len(args) == 0,
		Init:                f.init,
		Args:                args,
		Env:                 f.setenv,
		Hostname:            f.hostname,
		CapAdd:              f.capAdd,
		CapDrop:             f.capDrop,
		StopTimeout:         f.stopTimeout,
		SeccompOptional:     f.seccompOptional,
		DeviceFenceOptional: f.deviceFenceOptional,
		ConsoleLog:          f.consoleLog,
		// As nspawn's unit allows it: a tun device serves only the machine's
		// own network namespace and needs CAP_NET_ADMIN there.
		AllowTun: true,
	}
	if err := bootOptions(&cfg, f); err != nil {
		return cfg, err
	}
	if cfg.Users, err = bootUsers(f.privateUsers, name, dir); err != nil {
		return cfg, err
	}
	base, err := filepath.Abs(cliPaths().RuntimeDir)
	if err != nil {
		return cfg, fmt.Errorf("boot: --runtime-dir: %w", err)
	}
	cfg.RuntimeDir = rundir.For(base, name).Path()
	return cfg, nil
}

// bootOptions adds the network mode, mounts and limits the flags ask for.
func bootOptions(cfg *container.Config, f bootOpts) error {
	switch f.network {
	case "none", "private", "":
		cfg.NetworkMode = "private"
	case "host":
		cfg.NetworkMode = "host"
	default:
		return fmt.Errorf("boot: --network %q: want none or host", f.network)
	}
	for _, b := range f.binds {
		m, err := parseBind(b)
		if err != nil {
			return err
		}
		cfg.Mounts = append(cfg.Mounts, m)
	}
	for _, t := range f.tmpfs {
		cfg.Mounts = append(cfg.Mounts, container.Mount{Type: "tmpfs", Target: t})
	}
	if f.memoryMax != "" {
		n, err := spec.ParseSize(f.memoryMax)
		if err != nil {
			return fmt.Errorf("boot: --memory-max: %w", err)
		}
		if n <= 0 {
			return fmt.Errorf("boot: --memory-max %q: must be greater than 0; leave it out for no limit", f.memoryMax)
		}
		cfg.Resources.MemoryMax = n.Bytes()
	}
	cfg.Resources.PidsMax = f.pidsMax
	for _, e := range f.syscallFilter {
		cfg.SyscallFilter = append(cfg.SyscallFilter, strings.Fields(e)...)
	}
	cfg.Resources.CPUs = f.cpus
	return nil
}

// bootUsers gives the machine its range of host IDs (recorded under the
// state directory, as berthd's machines' are), or none with off.
func bootUsers(flag, name, dir string) (*container.Users, error) {
	var base uint32
	pinned := false
	switch strings.ToLower(flag) {
	case "off", "no", "false":
		return nil, nil
	case "pick", "yes", "true", "":
	default:
		n, err := strconv.ParseUint(flag, 0, 32)
		if err != nil || n == 0 || n%userns.Size != 0 {
			return nil, fmt.Errorf("boot: --private-users %q: want pick, off or the first UID of a range (a multiple of 65536 above 0)", flag)
		}
		base, pinned = uint32(n), true
	}
	u, err := assignUsers(base, pinned, name, dir)
	if err != nil {
		return nil, fmt.Errorf("boot: --private-users: %w", err)
	}
	return u, nil
}

// assignUsers records the machine's range of host IDs (base, or one berth
// picks when base is 0 and not pinned) for the tree dir, idmapped into it.
// berth boot never shifts a directory it was given: a tree that cannot be
// idmapped is refused (nspawn -U would chown it for good).
func assignUsers(base uint32, pinned bool, name, dir string) (*container.Users, error) {
	if err := userns.Probe(dir); err != nil {
		return nil, fmt.Errorf("the tree cannot be idmapped into the machine's user namespace: %w; "+
			"boot it with --private-users=off (its root is then the host's root), or from a filesystem that can be idmapped (ext4, xfs, btrfs, tmpfs)", err)
	}
	r, err := userns.Open(cliPaths().StateDir).Assign(name, base, pinned)
	if err != nil {
		return nil, err
	}
	return &container.Users{Base: r.Base, Size: userns.Size}, nil
}

// releaseBootRange forgets the range of a machine that berth boot ran from
// a tree of the caller's: its files stay owned 0…65535 (the tree is
// idmapped), so nothing needs the range kept, and names of one-off boots
// would pile up. The range of a machine berthd keeps a root for stays.
func releaseBootRange(name string) {
	stateDir := cliPaths().StateDir
	if rootfs.HasRoot(stateDir, name) {
		return
	}
	if err := userns.Open(stateDir).Release(name); err != nil {
		slog.Warn("cannot forget the machine's UID range", "machine", name, "err", err)
	}
}

// machineID picks the machine ID as nspawn does: the flag, else the tree's own
// /etc/machine-id, else (berth's addition) one derived from the name, so that
// the same machine keeps its ID across boots.
func machineID(flag, dir, name string) (string, error) {
	if flag != "" {
		id, err := container.NormalizeUUID(flag)
		if err != nil {
			return "", fmt.Errorf("boot: --machine-id: %w", err)
		}
		return id, nil
	}
	if b, err := os.ReadFile(filepath.Join(dir, "etc/machine-id")); err == nil {
		if id, err := container.NormalizeUUID(strings.TrimSpace(string(b))); err == nil {
			return id, nil
		}
	}
	return rundir.MachineUUID(name), nil
}

func parseBind(s string) (container.Mount, error) {
	parts := strings.Split(s, ":")
	m := container.Mount{Type: "bind", Source: parts[0], Idmap: true}
	switch len(parts) {
	case 1:
		m.Target = parts[0]
	case 2:
		m.Target = parts[1]
	case 3:
		m.Target = parts[1]
		for _, o := range strings.Split(parts[2], ",") {
			switch o {
			case "ro":
				m.ReadOnly = true
			case "rw":
			case "idmap":
			case "noidmap":
				m.Idmap = false
			default:
				return m, fmt.Errorf("boot: --bind %q: the options after the second ':' are ro or rw, idmap or noidmap", s)
			}
		}
	default:
		return m, fmt.Errorf("boot: --bind %q: want SRC[:DST[:OPTIONS]]", s)
	}
	if m.Target == "" {
		m.Target = m.Source
	}
	src, err := filepath.Abs(m.Source)
	if err != nil {
		return m, err
	}
	m.Source = src
	if !filepath.IsAbs(m.Target) {
		return m, fmt.Errorf("boot: --bind %q: the target must be an absolute path inside the machine", s)
	}
	return m, nil
}
