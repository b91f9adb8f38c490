package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berthd/berth/machined"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/rootfs"
)

// connect returns the daemon's API when berthd runs, or else a manager in this
// process for one-shot work (machines it starts still run detached, but nobody
// restarts them when they die).
func connect(ctx context.Context) (api.API, error) {
	paths, daemon, err := resolvePaths(ctx)
	if err != nil {
		return nil, err
	}
	if daemon != nil {
		return daemon, nil
	}
	return machined.OpenLocal(paths)
}

// resolvePaths finds the manager this command talks to. A berthd answering on
// the socket owns its state directory: without an explicit --state-dir (or
// $BERTH_STATE_DIR) the CLI uses berthd and berthd's state directory, so that
// two managers never own the same machines; an explicit one that differs from
// berthd's is an error naming both. Without berthd the CLI works locally.
func resolvePaths(ctx context.Context) (config.Paths, *api.Client, error) {
	paths := cliPaths()
	c, err := api.Dial(ctx, paths.Socket)
	if err != nil {
		return paths, nil, nil
	}
	d, err := c.Daemon(ctx)
	if err != nil {
		return paths, nil, fmt.Errorf("berthd on %s does not answer: %w", paths.Socket, err)
	}
	switch {
	case d.StateDir == "" || sameDir(d.StateDir, paths.StateDir):
		// An older berthd does not say its state directory: trust it.
	case !stateDirExplicit():
		paths.StateDir = d.StateDir
	default:
		return paths, nil, fmt.Errorf("berthd on %s manages the state directory %s, and --state-dir says %s: "+
			"drop --state-dir (and $BERTH_STATE_DIR) to use berthd, or give --runtime-dir of a runtime directory without a berthd to work on %s locally",
			paths.Socket, d.StateDir, paths.StateDir, paths.StateDir)
	}
	return paths, c, nil
}

// stateDirExplicit reports whether the user chose the state directory (the
// flag or $BERTH_STATE_DIR) rather than taking the default.
func stateDirExplicit() bool {
	return globals.flags.Changed("state-dir") || os.Getenv("BERTH_STATE_DIR") != ""
}

func sameDir(a, b string) bool {
	if a == b {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// cliPaths are the paths of this installation as the global flags give them.
func cliPaths() config.Paths {
	p := config.DefaultPaths()
	p.StateDir = globals.stateDir
	// The environment is read when the command runs, not when its flags were
	// made (a test, or a program running several commands, may change it).
	if env := os.Getenv("BERTH_STATE_DIR"); env != "" && !globals.flags.Changed("state-dir") {
		p.StateDir = env
	}
	runtimeDir := globals.runtimeDir
	if env := os.Getenv("BERTH_RUNTIME_DIR"); env != "" && !globals.flags.Changed("runtime-dir") {
		runtimeDir = env
	}
	if runtimeDir != "" {
		p.RuntimeDir = runtimeDir
		p.Socket = p.RuntimeDir + "/berthd.sock"
	}
	if globals.socket != "" {
		p.Socket = globals.socket
	}
	return p
}

// completeMachines completes machine names for the shell.
func completeMachines(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	ctl, err := connect(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	list, err := ctl.List(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, s := range list {
		names = append(names, s.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// completeMachine completes the one machine name of a verb (berth logs
// NAME, berth shell NAME COMMAND): nothing after it.
func completeMachine(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return completeMachines(cmd, args, toComplete)
}

// completeImages completes image names for the shell (berth image remove
// NAME…, berth image export NAME FILE: only NAME).
func completeImages(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 && cmd.Name() == "export" {
		return nil, cobra.ShellCompDirectiveDefault // FILE
	}
	s, err := openStore()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	imgs, err := s.Images()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, img := range imgs {
		names = append(names, img.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// withAPI is the RunE of a verb that works through berth's API: run gets
// berthd's, or a manager's in this process (see connect).
func withAPI(run func(cmd *cobra.Command, ctl api.API, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		ctl, err := connect(cmd.Context())
		if err != nil {
			return err
		}
		return run(cmd, ctl, args)
	}
}

// withStore is the RunE of a verb that works on the image and root store
// itself, without a manager: run gets the store (see openStore).
func withStore(run func(cmd *cobra.Command, s *rootfs.Store, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		s, err := openStore()
		if err != nil {
			return err
		}
		return run(cmd, s, args)
	}
}

// openStore opens the image and root store of the state directory: berthd's
// when one runs and no other was asked for (see resolvePaths).
func openStore() (*rootfs.Store, error) {
	paths, _, err := resolvePaths(context.Background())
	if err != nil {
		return nil, err
	}
	return rootfs.Open(paths.StateDir)
}

// interruptible returns a context cancelled by SIGINT or SIGTERM, so that long
// work stops cleanly (and leaves nothing half-made) on Ctrl-C.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// storeWork runs long work on the store: with its progress shown on cmd's
// stderr, and a context that Ctrl-C cancels. The progress display is ended
// when work returns, so that what follows starts on a line of its own.
func storeWork(cmd *cobra.Command, work func(ctx context.Context, s *rootfs.Store) error) error {
	s, err := openStore()
	if err != nil {
		return err
	}
	ctx, cancel := interruptible()
	defer cancel()
	pr := newProgress(cmd.ErrOrStderr())
	err = work(rootfs.WithProgress(ctx, pr.Rootfs()), s)
	pr.End(err)
	return err
}
