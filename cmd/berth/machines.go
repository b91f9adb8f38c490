package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berthd/berth/machined"
	"github.com/spf13/cobra"
)

// connect returns the daemon's API when berthd runs, or else a manager in this
// process for one-shot work (machines it starts still run detached, but nobody
// restarts them when they die).
func connect(ctx context.Context) (machined.API, error) {
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
func resolvePaths(ctx context.Context) (machined.Paths, *machined.Client, error) {
	paths := cliPaths()
	c, err := machined.Dial(ctx, paths.Socket)
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
	return rootCmd.PersistentFlags().Changed("state-dir") || os.Getenv("BERTH_STATE_DIR") != ""
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
func cliPaths() machined.Paths {
	p := machined.DefaultPaths()
	p.StateDir = globals.stateDir
	if globals.runtimeDir != "" {
		p.RuntimeDir = globals.runtimeDir
		p.Socket = p.RuntimeDir + "/berthd.sock"
	}
	if globals.socket != "" {
		p.Socket = globals.socket
	}
	return p
}

func init() {
	listCmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List machines: declared, running, or with a root",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			list, err := api.List(cmd.Context())
			if err != nil {
				return err
			}
			o := outputOf(cmd)
			if err := printList(o, list, machineHeader, machineRow); err != nil || o.json {
				return err
			}
			fmt.Fprintf(o.w, "\n%d machines listed.\n", len(list))
			if d, err := api.Daemon(cmd.Context()); err == nil && len(d.Errors) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: the definitions have %d errors (berth status shows them); the last good definitions stay in force\n", len(d.Errors))
			}
			return nil
		},
	}

	statusCmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "Show a machine's state, addresses, limits, usage, console and events; without NAME, berthd's",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			if len(args) == 0 {
				d, err := api.Daemon(cmd.Context())
				if err != nil {
					return err
				}
				return outputOf(cmd).print(d, func(w io.Writer) error { printDaemon(w, d); return nil })
			}
			s, err := api.Status(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return outputOf(cmd).print(s, func(w io.Writer) error { printStatus(w, s); return nil })
		},
	}
	rootCmd.AddCommand(listCmd, statusCmd)

	verbs := []struct{ use, short, verb string }{
		{"start NAME...", "Start machines (lifts a hold)", "start"},
		{"stop NAME...", "Power machines off cleanly and hold them stopped until berth start or release", "stop"},
		{"poweroff NAME...", "Same as stop", "poweroff"},
		{"reboot NAME...", "Reboot machines (SIGINT to the guest init)", "reboot"},
		{"terminate NAME...", "Stop machines at once (SIGKILL) and hold them stopped", "terminate"},
		{"release NAME...", "Lift a hold: the definitions rule the machine again", "release"},
		{"recreate NAME...", "Make a machine's root anew from its image (its data is lost) and start it", "recreate"},
	}
	for _, v := range verbs {
		verb := v.verb
		c := &cobra.Command{
			Use:               v.use,
			Short:             v.short,
			Args:              cobra.MinimumNArgs(1),
			ValidArgsFunction: completeMachines,
			RunE: func(cmd *cobra.Command, args []string) error {
				if verb == "recreate" {
					if yes, _ := cmd.Flags().GetBool("yes"); !yes {
						return &exitError{code: 1, err: fmt.Errorf("recreate deletes the root of %s and everything written in it; add --yes to go ahead", strings.Join(args, ", "))}
					}
				}
				api, err := connect(cmd.Context())
				if err != nil {
					return err
				}
				failed := 0
				for _, name := range args {
					if err := api.Verb(cmd.Context(), name, verb); err != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "berth %s %s: %v\n", verb, name, err)
						failed++
					}
				}
				if failed > 0 {
					return &exitError{code: 1}
				}
				return nil
			},
		}
		if verb == "recreate" {
			c.Flags().Bool("yes", false, "confirm that the machine's root (its data) is thrown away")
		}
		rootCmd.AddCommand(c)
	}

	var killSignal, killWhom string
	killCmd := &cobra.Command{
		Use:               "kill NAME...",
		Short:             "Send a signal to machines (default SIGTERM to all processes, like machinectl kill)",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeMachines,
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := api.Kill(cmd.Context(), name, machined.KillRequest{Signal: killSignal, Whom: killWhom}); err != nil {
					return fmt.Errorf("kill %s: %w", name, err)
				}
			}
			return nil
		},
	}
	killCmd.Flags().StringVarP(&killSignal, "signal", "s", "SIGTERM", "signal to send, by name or number")
	killCmd.Flags().StringVar(&killWhom, "kill-whom", "all", "leader (the guest init) or all (every process of the machine)")
	rootCmd.AddCommand(killCmd)

	var prune bool
	planCmd := &cobra.Command{
		Use:     "plan [PATH]",
		Aliases: []string{"diff"},
		Short:   "Show what apply would do; exit 0 with no changes, 2 with changes, 1 on errors",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			req := machined.PlanRequest{Prune: prune}
			if len(args) == 1 {
				req.Path = args[0]
			}
			p, err := api.Plan(cmd.Context(), req)
			if err != nil {
				return err
			}
			// The exit status says whether there are changes, even when the
			// plan cannot be written out.
			_ = outputOf(cmd).print(p, func(w io.Writer) error { _, err := io.WriteString(w, p.String()); return err })
			switch {
			case len(p.Errors) > 0:
				return &exitError{code: 1}
			case p.Changes():
				return &exitError{code: 2}
			}
			return nil
		},
	}
	planCmd.Flags().BoolVar(&prune, "prune", false, "also plan removing the roots of machines no longer declared")

	var applyPrune, forget bool
	applyCmd := &cobra.Command{
		Use:   "apply [PATH]",
		Short: "Apply the definitions under PATH (kept by berth as a source), or reconcile all sources now",
		Long: `apply takes the definitions under PATH — a file or a directory tree — and brings
the host to them: networks, images, machine roots, then machines. berth keeps a
copy of what was applied, so later edits under PATH change nothing until the next
apply (plan/apply, as in a CI pipeline); directories listed in berthd.yaml are
watched instead and apply on their own. Without PATH, apply reconciles every
source now. --forget PATH drops what was applied from PATH: its machines are no
longer declared and stop (their roots stay unless --prune).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			req := machined.ApplyRequest{Prune: applyPrune, Forget: forget}
			if len(args) == 1 {
				req.Path = args[0]
			} else if forget {
				return fmt.Errorf("--forget needs the PATH that was applied")
			}
			o := outputOf(cmd)
			// Long work (an image built with debootstrap) reports progress as
			// events: show them while apply runs.
			stop := func() {}
			if !o.json {
				stop = followProgress(cmd.Context(), api, cmd.ErrOrStderr())
			}
			res, err := api.Apply(cmd.Context(), req)
			stop()
			if res != nil && res.Plan != nil && len(res.Plan.Errors) > 0 {
				// In text, the errors go to stderr, as validate's do.
				_ = o.print(res, func(io.Writer) error {
					for _, e := range res.Plan.Errors {
						fmt.Fprintln(cmd.ErrOrStderr(), e)
					}
					return nil
				})
				return &exitError{code: 1, err: errors.New("definitions have errors; nothing was applied")}
			}
			if err != nil {
				return err
			}
			return o.print(res, func(w io.Writer) error { return printApplied(w, res) })
		},
	}
	applyCmd.Flags().BoolVar(&applyPrune, "prune", false, "delete the roots of machines that are no longer declared (their data!)")
	applyCmd.Flags().BoolVar(&forget, "forget", false, "drop the definitions applied from PATH")

	var follow bool
	var evMachine string
	eventsCmd := &cobra.Command{
		Use:   "events",
		Short: "Show the event log (machines started, stopped, failed, drift fixed …); -f follows it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return api.Events(ctx, 0, evMachine, follow, func(e machined.Event) error {
				return outputOf(cmd).line(e, fmt.Sprintf("%s  %-18s %s", e.Time.Local().Format("2006-01-02 15:04:05"), e.Kind, e.Message))
			})
		},
	}
	eventsCmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	eventsCmd.Flags().StringVarP(&evMachine, "machine", "M", "", "only the events of this machine")

	rootCmd.AddCommand(planCmd, applyCmd, eventsCmd)
}

// printApplied prints the actions apply took, each with its failure, and the
// plan's notes. Its error is the exit status of a text apply: 1 when an action
// failed (under -o json the result says so, and the status is 0).
func printApplied(w io.Writer, res *machined.ApplyResult) error {
	failed := 0
	for _, r := range res.Results {
		if r.Error != "" {
			failed++
			fmt.Fprintf(w, "%s\n  failed: %s\n", r.Action, r.Error)
		} else {
			fmt.Fprintf(w, "%s\n", r.Action)
		}
	}
	for _, a := range res.Plan.Actions {
		if a.Op == machined.OpNote {
			fmt.Fprintln(w, a)
		}
	}
	if len(res.Results) == 0 {
		fmt.Fprintln(w, "No changes: the host matches the definitions.")
	}
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d actions failed", failed, len(res.Results))}
	}
	return nil
}

// followProgress prints the progress events that appear from now on (image
// builds, machines starting) until the returned function is called, which
// prints what is still unprinted before it returns.
func followProgress(ctx context.Context, api machined.API, w io.Writer) func() {
	var last uint64
	_ = api.Events(ctx, 0, "", false, func(e machined.Event) error { last = e.Seq; return nil })
	var mu sync.Mutex
	show := func(e machined.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if e.Seq <= last {
			return nil
		}
		last = e.Seq
		switch e.Kind {
		case machined.EvImageProgress, machined.EvMachineStarting:
			fmt.Fprintf(w, "  … %s\n", e.Message)
		}
		return nil
	}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		mu.Lock()
		from := last
		mu.Unlock()
		_ = api.Events(fctx, from, "", true, show)
	}()
	return func() {
		cancel()
		<-done
		mu.Lock()
		from := last
		mu.Unlock()
		_ = api.Events(ctx, from, "", false, show)
	}
}

// completeMachines completes machine names for the shell.
func completeMachines(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	api, err := connect(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	list, err := api.List(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, s := range list {
		names = append(names, s.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// machineHeader and machineRow are berth list's table.
var machineHeader = []string{"MACHINE", "STATE", "ADDRESS", "IMAGE", "SINCE", "NOTE"}

func machineRow(s machined.MachineStatus) []string {
	state := s.State
	if s.Hold != nil && s.State == machined.StateStopped {
		state += " (held)"
	}
	addr := "-"
	if len(s.Addresses) > 0 {
		addr = strings.Join(s.Addresses, ",")
	}
	note := ""
	if len(s.Notes) > 0 {
		note = s.Notes[0]
	}
	// A machine that is not running shows when it ended.
	since := s.Since
	if s.State == machined.StateStopped || s.State == machined.StateFailed {
		since = time.Time{}
		if s.LastExit != nil {
			since = s.LastExit.Time
		}
	}
	return []string{s.Name, state, addr, dash(s.Image), ago(since), note}
}

func printDaemon(w io.Writer, d *machined.DaemonStatus) {
	if d.Daemon {
		fmt.Fprintf(w, "berthd %s, pid %d, up since %s (%s)\n", d.Version, d.PID, d.Started.Local().Format(time.DateTime), ago(d.Started))
	} else {
		fmt.Fprintf(w, "berthd is not running (start it: systemctl start berthd, or berthd &); berth %s works on its own\n", d.Version)
	}
	fmt.Fprintf(w, "state: %s\ncgroup driver: %s\n", d.StateDir, d.Driver)
	if !d.LastReconcile.IsZero() {
		fmt.Fprintf(w, "last reconcile: %s\n", ago(d.LastReconcile))
	}
	fmt.Fprintln(w, "sources:")
	if len(d.Sources) == 0 {
		fmt.Fprintln(w, "  (none: berth apply PATH, or sources in /etc/berth/berthd.yaml)")
	}
	for _, s := range d.Sources {
		line := fmt.Sprintf("  %-8s %s", s.Kind, s.Location)
		if s.Revision != "" {
			line += " @ " + s.Revision[:min(12, len(s.Revision))]
		}
		if s.Error != "" {
			line += "  (" + s.Error + ")"
		}
		fmt.Fprintln(w, line)
	}
	if len(d.Errors) > 0 {
		fmt.Fprintf(w, "definition errors (%d; the last good definitions stay in force):\n", len(d.Errors))
		for _, e := range d.Errors {
			fmt.Fprintln(w, "  "+e)
		}
	}
}

func printStatus(w io.Writer, s *machined.MachineStatus) {
	state := s.State
	if s.Hold != nil {
		state += " (held: " + s.Hold.Reason + ")"
	}
	fmt.Fprintf(w, "%s - %s\n", s.Name, state)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%12s: %s\n", k, v)
		}
	}
	if s.Declared {
		row("Definition", s.Source+" (desired "+s.Desired+")")
	} else {
		row("Definition", "none (not declared)")
	}
	img := s.Image
	if s.ImageDigest != "" {
		img += " (" + shortDigest(s.ImageDigest)
		if s.RootStrategy != "" {
			img += ", " + s.RootStrategy + " root"
		}
		img += ")"
	}
	row("Image", img)
	row("Root", s.Root)
	net := s.Network
	if len(s.Addresses) > 0 {
		net += " " + strings.Join(s.Addresses, " ")
	}
	row("Network", net)
	row("Ports", strings.Join(s.Ports, ", "))
	if !s.Since.IsZero() {
		since := s.Since.Local().Format(time.DateTime) + " (" + ago(s.Since) + ")"
		if !s.ReadySince.IsZero() {
			since += fmt.Sprintf(", ready after %s", s.ReadySince.Sub(s.Since).Round(time.Millisecond))
		}
		row("Since", since)
	}
	if s.SupervisorPID != 0 {
		row("Supervisor", fmt.Sprint(s.SupervisorPID))
		row("Leader", fmt.Sprint(s.LeaderPID))
	}
	if s.Cgroup != "" {
		row("Cgroup", s.Cgroup+" ("+s.Driver+")")
	}
	row("Seccomp", s.Seccomp)
	row("Devices", s.DeviceFence)
	row("Limits", kv(s.Limits))
	row("Usage", kv(s.Usage))
	if s.LastExit != nil {
		row("Last exit", fmt.Sprintf("%s, code %d, %s", s.LastExit.Reason, s.LastExit.Code, ago(s.LastExit.Time)))
	}
	if s.Restarts > 0 {
		row("Restarts", fmt.Sprint(s.Restarts))
	}
	if s.Hold != nil {
		row("Hold", s.Hold.Message+" since "+s.Hold.Since.Local().Format(time.DateTime))
	}
	row("Last error", s.LastError)
	for _, n := range s.Notes {
		row("Note", n)
	}
	if len(s.Console) > 0 {
		fmt.Fprintln(w, "\nConsole (last lines):")
		for _, l := range s.Console {
			fmt.Fprintln(w, "  "+l)
		}
	}
	if len(s.Events) > 0 {
		fmt.Fprintln(w, "\nEvents:")
		for _, e := range s.Events {
			fmt.Fprintf(w, "  %s  %s\n", e.Time.Local().Format(time.DateTime), e.Message)
		}
	}
}

func kv(m map[string]any) string {
	if len(m) == 0 {
		return ""
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %v", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
