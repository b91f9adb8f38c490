package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/ocibundle"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/userns"
)

// ociBootConfig is berth boot --oci-bundle DIR: the bundle's machine
// (package ocibundle), named after the bundle's directory, with the flags
// given beside it overriding or adding to it, as nspawn's command line does
// over a bundle; a command after -- replaces process.args.
func ociBootConfig(fs *pflag.FlagSet, args []string) (container.Config, error) {
	f := bootFlags
	var cfg container.Config
	for _, n := range []string{"directory", "init", "boot"} {
		if fs.Changed(n) {
			return cfg, fmt.Errorf("boot: --%s does not go with --oci-bundle: the bundle names its root and runs its process (a command after -- replaces process.args)", n)
		}
	}
	b, err := ocibundle.Load(f.ociBundle)
	if err != nil {
		return cfg, err
	}
	cfg = b.Config
	cfg.Name = f.name
	if cfg.Name == "" {
		cfg.Name = rundir.SanitizeName(filepath.Base(b.Dir))
	}
	if err := rundir.CheckName(cfg.Name); err != nil {
		return cfg, fmt.Errorf("boot: --name: %w", err)
	}
	if cfg.UUID, err = machineID(f.machineID, cfg.Root.Dir, cfg.Name); err != nil {
		return cfg, err
	}
	cfg.StopTimeout, cfg.ConsoleLog = f.stopTimeout, f.consoleLog
	cfg.SeccompOptional, cfg.DeviceFenceOptional = f.seccompOptional, f.deviceFenceOptional
	// As nspawn's unit allows it, and as berth boot -D does.
	cfg.AllowTun = true
	if len(args) > 0 {
		cfg.Args = args
	}
	if err := ociOverrides(&cfg, fs, f); err != nil {
		return cfg, err
	}
	if cfg.Users, err = ociUsers(fs, f, b, cfg.Name); err != nil {
		return cfg, err
	}
	base, err := filepath.Abs(cliPaths().RuntimeDir)
	if err != nil {
		return cfg, fmt.Errorf("boot: --runtime-dir: %w", err)
	}
	cfg.RuntimeDir = rundir.For(base, cfg.Name).Path()
	return cfg, nil
}

// ociOverrides applies the flags given beside --oci-bundle: --hostname,
// --network, --read-only, --memory-max, --cpus and --pids-max replace what
// the bundle says; --bind, --tmpfs, --setenv (a key the bundle sets takes
// the flag's value), --system-call-filter, --capability and
// --drop-capability add to it.
func ociOverrides(cfg *container.Config, fs *pflag.FlagSet, f bootOpts) error {
	var fl container.Config
	if err := bootOptions(&fl, f); err != nil {
		return err
	}
	if fs.Changed("hostname") {
		cfg.Hostname = f.hostname
	}
	if fs.Changed("network") {
		cfg.NetworkMode = fl.NetworkMode
	}
	if fs.Changed("read-only") {
		cfg.Root.ReadOnly = f.readOnly
	}
	if fs.Changed("memory-max") {
		cfg.Resources.MemoryMax = fl.Resources.MemoryMax
	}
	if fs.Changed("pids-max") {
		cfg.Resources.PidsMax = fl.Resources.PidsMax
	}
	if fs.Changed("cpus") {
		cfg.Resources.CPUs = fl.Resources.CPUs
	}
	cfg.Mounts = append(cfg.Mounts, fl.Mounts...)
	cfg.Env = append(cfg.Env, f.setenv...)
	cfg.SyscallFilter = fl.SyscallFilter
	return ociCaps(cfg, f.capAdd, f.capDrop)
}

// ociCaps changes the bundle's bounding set by --capability and
// --drop-capability: a capability the flags add leaves the bundle's drops,
// one they drop leaves its adds and its ambient set.
func ociCaps(cfg *container.Config, add, drop []string) error {
	canon := func(flag, s string) (string, error) {
		if strings.EqualFold(s, "all") {
			return "all", nil
		}
		n, err := container.CanonicalCapability(s)
		if err != nil {
			return "", fmt.Errorf("boot: --%s: %w", flag, err)
		}
		return n, nil
	}
	for _, s := range add {
		n, err := canon("capability", s)
		if err != nil {
			return err
		}
		if n == "all" {
			cfg.CapDrop = nil
		}
		cfg.CapDrop = slices.DeleteFunc(cfg.CapDrop, func(c string) bool { return c == n })
		cfg.CapAdd = append(cfg.CapAdd, n)
	}
	for _, s := range drop {
		n, err := canon("drop-capability", s)
		if err != nil {
			return err
		}
		gone := func(c string) bool { return n == "all" || c == n }
		cfg.CapAdd = slices.DeleteFunc(cfg.CapAdd, gone)
		cfg.AmbientCaps = slices.DeleteFunc(cfg.AmbientCaps, gone)
		cfg.CapDrop = append(cfg.CapDrop, n)
	}
	return nil
}

// ociUsers gives the machine the bundle's user namespace, unless
// --private-users says otherwise: none without one (the machine's root is
// the host's), a range berth picks when config.json maps no IDs, else its
// mappings' range. A rootfs owned by that range on disk already (as a
// runtime without idmapped mounts needs it) is mounted as it is; any other
// is idmapped into the range, as berth boot -D -U does.
func ociUsers(fs *pflag.FlagSet, f bootOpts, b *ocibundle.Bundle, name string) (*container.Users, error) {
	if fs.Changed("private-users") {
		return bootUsers(f.privateUsers, name, b.Config.Root.Dir)
	}
	ns := b.UserNS
	if ns == nil {
		return nil, nil
	}
	fail := func(err error) (*container.Users, error) {
		return nil, fmt.Errorf("boot: %s: the user namespace of config.json's linux.namespaces: %w", f.ociBundle, err)
	}
	if st, err := os.Stat(b.Config.Root.Dir); err == nil && ns.HostID != 0 && st.Sys().(*syscall.Stat_t).Uid == ns.HostID {
		r, err := userns.Open(cliPaths().StateDir).Assign(name, ns.HostID, true)
		if err != nil {
			return fail(err)
		}
		return &container.Users{Base: r.Base, Size: userns.Size, Shifted: true,
			Why: "the bundle's rootfs is owned by its linux.uidMappings range on disk"}, nil
	}
	u, err := assignUsers(ns.HostID, ns.HostID != 0, name, b.Config.Root.Dir)
	if err != nil {
		return fail(err)
	}
	return u, nil
}
