package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/berthd/berth/machined/api"
	"github.com/spf13/cobra"
)

func newListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List machines: declared, running, or with a root",
		Example: `  berth list
  berth list -o json`,
		Args: cobra.NoArgs,
		RunE: withAPI(func(cmd *cobra.Command, ctl api.API, _ []string) error {
			list, err := ctl.List(cmd.Context())
			if err != nil {
				return err
			}
			o := outputOf(cmd)
			if err := printList(o, list, machineHeader, machineRow); err != nil || o.json {
				return err
			}
			fmt.Fprintf(o.w, "\n%d machines listed.\n", len(list))
			if d, err := ctl.Daemon(cmd.Context()); err == nil && len(d.Errors) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: the definitions have %d errors (berth status shows them); the last good definitions stay in force\n", len(d.Errors))
			}
			return nil
		}),
	}
}

func newStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status [NAME]",
		Short: "Show a machine's state, addresses, limits, usage, console and events; without NAME, berthd's",
		Example: `  berth status web
  berth status web -o json
  berth status              # berthd: its sources, definition errors`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeMachine,
		RunE: withAPI(func(cmd *cobra.Command, ctl api.API, args []string) error {
			if len(args) == 0 {
				d, err := ctl.Daemon(cmd.Context())
				if err != nil {
					return err
				}
				return outputOf(cmd).print(d, func(w io.Writer) error { printDaemon(w, d); return nil })
			}
			s, err := ctl.Status(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return outputOf(cmd).print(s, func(w io.Writer) error { printStatus(w, s); return nil })
		}),
	}
}

// lifecycleVerbs are the verbs that change machines' states by name, as
// machinectl's do.
var lifecycleVerbs = []struct{ use, short, verb, example string }{
	{"start NAME...", "Start machines (lifts a hold)", "start", "  berth start web db"},
	{"stop NAME...", "Power machines off cleanly and hold them stopped until berth start or release", "stop", "  berth stop web"},
	{"poweroff NAME...", "Same as stop", "poweroff", "  berth poweroff web"},
	{"reboot NAME...", "Reboot machines (SIGINT to the guest init)", "reboot", "  berth reboot web"},
	{"terminate NAME...", "Stop machines at once (SIGKILL) and hold them stopped", "terminate", "  berth terminate web"},
	{"release NAME...", "Lift a hold: the definitions rule the machine again", "release", "  berth release web"},
	{"recreate NAME...", "Make a machine's root anew from its image (its data is lost) and start it", "recreate", "  berth recreate --yes web"},
}

// newLifecycleCmds makes the command of each of lifecycleVerbs.
func newLifecycleCmds() []*cobra.Command {
	var cmds []*cobra.Command
	for _, v := range lifecycleVerbs {
		c := newLifecycleCmd(v.use, v.short, v.verb)
		c.Example = v.example
		cmds = append(cmds, c)
	}
	return cmds
}

func newLifecycleCmd(use, short, verb string) *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:               use,
		Short:             short,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeMachines,
		RunE: func(cmd *cobra.Command, args []string) error {
			if verb == "recreate" && !yes {
				return &exitError{code: 1, err: fmt.Errorf("recreate deletes the root of %s and everything written in it; add --yes to go ahead", strings.Join(args, ", "))}
			}
			ctl, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			// One request for all the names: berthd acts on them together.
			outs, err := ctl.Verbs(cmd.Context(), api.VerbRequest{Verb: verb, Names: args})
			if err != nil {
				return err
			}
			failed := false
			for _, o := range outs {
				if o.Error != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "berth %s %s: %s\n", verb, o.Machine, o.Error)
					failed = true
				}
			}
			if failed {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	if verb == "recreate" {
		c.Flags().BoolVar(&yes, "yes", false, "confirm that the machine's root (its data) is thrown away")
	}
	return c
}

func newKillCmd() *cobra.Command {
	var signal, whom string
	c := &cobra.Command{
		Use:   "kill NAME...",
		Short: "Send a signal to machines (default SIGTERM to all processes, like machinectl kill)",
		Example: `  berth kill web
  berth kill -s SIGHUP --kill-whom leader web`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeMachines,
		RunE: withAPI(func(cmd *cobra.Command, ctl api.API, args []string) error {
			for _, name := range args {
				if err := ctl.Kill(cmd.Context(), name, api.KillRequest{Signal: signal, Whom: whom}); err != nil {
					return fmt.Errorf("kill %s: %w", name, err)
				}
			}
			return nil
		}),
	}
	c.Flags().StringVarP(&signal, "signal", "s", "SIGTERM", "signal to send, by name or number")
	c.Flags().StringVar(&whom, "kill-whom", "all", "leader (the guest init) or all (every process of the machine)")
	return c
}

// machineHeader and machineRow are berth list's table.
var machineHeader = []string{"MACHINE", "STATE", "ADDRESS", "IMAGE", "SINCE", "NOTE"}

func machineRow(s api.MachineStatus) []string {
	state := s.State
	if s.Hold != nil && s.State == api.StateStopped {
		state += " (held)"
	}
	state += healthNote(s)
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
	if s.State == api.StateStopped || s.State == api.StateFailed {
		since = time.Time{}
		if s.LastExit != nil {
			since = s.LastExit.Time
		}
	}
	return []string{s.Name, state, addr, dash(s.Image), ago(since), note}
}

func printDaemon(w io.Writer, d *api.DaemonStatus) {
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

func printStatus(w io.Writer, s *api.MachineStatus) {
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
	row("Image", imageLine(s))
	row("Pulled from", s.ImageRef)
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
	if s.Users != nil {
		row("Users", s.Users.String())
	} else if s.SupervisorPID != 0 {
		row("Users", "the host's (privateUsers: false: the machine's root is the host's root)")
	}
	row("Status", s.NotifyStatus)
	if h := s.Health; h != nil {
		row("Health", healthLine(h))
	}
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

// imageLine is the image a machine's root was made from, with its digest and
// how the root is made.
func imageLine(s *api.MachineStatus) string {
	img := s.Image
	if s.ImageDigest != "" {
		img += " (" + shortDigest(s.ImageDigest)
		if s.RootStrategy != "" {
			img += ", " + s.RootStrategy + " root"
		}
		img += ")"
	}
	return img
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
