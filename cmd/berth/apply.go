package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/berthd/berth/machined/api"
	"github.com/spf13/cobra"
)

func newPlanCmd() *cobra.Command {
	var prune bool
	c := &cobra.Command{
		Use:     "plan [PATH]",
		Aliases: []string{"diff"},
		Short:   "Show what apply would do; exit 0 with no changes, 2 with changes, 1 on errors",
		Example: `  berth plan machines/
  berth plan --prune -o json machines/
  berth plan                # all sources, as berthd would`,
		Args: cobra.MaximumNArgs(1),
		RunE: withAPI(func(cmd *cobra.Command, ctl api.API, args []string) error {
			req := api.PlanRequest{Prune: prune}
			if len(args) == 1 {
				req.Path = args[0]
			}
			p, err := ctl.Plan(cmd.Context(), req)
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
		}),
	}
	c.Flags().BoolVar(&prune, "prune", false, "also plan removing the roots of machines no longer declared")
	return c
}

func newApplyCmd() *cobra.Command {
	var prune, forget bool
	c := &cobra.Command{
		Use:   "apply [PATH]",
		Short: "Apply the definitions under PATH (kept by berth as a source), or reconcile all sources now",
		Long: `apply takes the definitions under PATH — a file or a directory tree — and brings
the host to them: networks, images, machine roots, then machines. berth keeps a
copy of what was applied, so later edits under PATH change nothing until the next
apply (plan/apply, as in a CI pipeline); directories listed in berthd.yaml are
watched instead and apply on their own. Without PATH, apply reconciles every
source now. --forget PATH drops what was applied from PATH: its machines are no
longer declared and stop (their roots stay unless --prune).`,
		Example: `  berth apply machines/
  berth apply --forget machines/
  berth apply               # reconcile every source now`,
		Args: cobra.MaximumNArgs(1),
		RunE: withAPI(func(cmd *cobra.Command, ctl api.API, args []string) error {
			req := api.ApplyRequest{Prune: prune, Forget: forget}
			if len(args) == 1 {
				req.Path = args[0]
			} else if forget {
				return fmt.Errorf("--forget needs the PATH that was applied")
			}
			return runApply(cmd, ctl, req)
		}),
	}
	c.Flags().BoolVar(&prune, "prune", false, "delete the roots of machines that are no longer declared (their data!)")
	c.Flags().BoolVar(&forget, "forget", false, "drop the definitions applied from PATH")
	return c
}

// runApply applies req, with the progress of long work shown on a terminal, and
// prints the result.
func runApply(cmd *cobra.Command, ctl api.API, req api.ApplyRequest) error {
	o := outputOf(cmd)
	// Long work (an image built with debootstrap) reports progress as
	// events: show them while apply runs.
	stop := func() {}
	if !o.json {
		stop = followProgress(cmd.Context(), ctl, cmd.ErrOrStderr())
	}
	res, err := ctl.Apply(cmd.Context(), req)
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
}

func newEventsCmd() *cobra.Command {
	var follow bool
	var machine string
	c := &cobra.Command{
		Use:   "events",
		Short: "Show the event log (machines started, stopped, failed, drift fixed …); -f follows it",
		Example: `  berth events
  berth events -f -M web
  berth events -o json`,
		Args: cobra.NoArgs,
		RunE: withAPI(func(cmd *cobra.Command, ctl api.API, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o := outputOf(cmd)
			return ctl.Events(ctx, 0, machine, follow, func(e api.Event) error {
				return o.line(e, fmt.Sprintf("%s  %-18s %s", e.Time.Local().Format("2006-01-02 15:04:05"), e.Kind, e.Message))
			})
		}),
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	c.Flags().StringVarP(&machine, "machine", "M", "", "only the events of this machine")
	return c
}

// printApplied prints the actions apply took, each with its failure, and the
// plan's notes. Its error is the exit status of a text apply: 1 when an action
// failed (under -o json the result says so, and the status is 0).
func printApplied(w io.Writer, res *api.ApplyResult) error {
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
		if a.Op == api.OpNote {
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
func followProgress(ctx context.Context, ctl api.API, w io.Writer) func() {
	var last uint64
	_ = ctl.Events(ctx, 0, "", false, func(e api.Event) error { last = e.Seq; return nil })
	var mu sync.Mutex
	show := func(e api.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if e.Seq <= last {
			return nil
		}
		last = e.Seq
		switch e.Kind {
		case api.EvImageProgress, api.EvMachineStarting:
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
		_ = ctl.Events(fctx, from, "", true, show)
	}()
	return func() {
		cancel()
		<-done
		mu.Lock()
		from := last
		mu.Unlock()
		_ = ctl.Events(ctx, from, "", false, show)
	}
}
