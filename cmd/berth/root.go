package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// exitError carries a specific exit code out of a command (for example 2 from
// `berth plan` when changes are pending, or a machine's own exit code).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// globals are the flags every verb shares.
var globals struct {
	stateDir   string
	runtimeDir string
	socket     string
	output     string
	// flags is the set of the global flags itself, to tell one that was
	// given from one at its default (stateDirExplicit).
	flags *pflag.FlagSet
}

// rootCmd is the command line: the global flags and every verb.
var rootCmd = newRootCmd()

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "berth",
		Short: "Declarative machine manager: full-OS system containers from YAML definitions",
		Long: `berth manages machines: full-OS system containers that boot their own init,
declared in YAML files. berthd reconciles the host toward the definitions;
berth is the command line, in the style of machinectl.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	def := os.Getenv("BERTH_STATE_DIR")
	if def == "" {
		def = "/var/lib/berth"
	}
	f := root.PersistentFlags()
	f.StringVar(&globals.stateDir, "state-dir", def, "berth's state directory (env BERTH_STATE_DIR)")
	f.StringVar(&globals.runtimeDir, "runtime-dir", os.Getenv("BERTH_RUNTIME_DIR"), "berth's runtime directory (env BERTH_RUNTIME_DIR; default /run/berth)")
	f.StringVar(&globals.socket, "socket", "", "berthd's API socket (default RUNTIME-DIR/berthd.sock)")
	f.StringVarP(&globals.output, "output", "o", "table", "output format: table or json")
	globals.flags = f

	root.AddCommand(newListCmd(), newStatusCmd(), newShowCmd(), newKillCmd())
	root.AddCommand(newLifecycleCmds()...)
	root.AddCommand(newPlanCmd(), newApplyCmd(), newEventsCmd(), newValidateCmd(), newSchemaCmd())
	root.AddCommand(newImageCmd(), newCloneCmd(), newSnapshotCmd(), newRemoveCmd(), newNetworkCmd())
	root.AddCommand(newBootCmd(), newShellCmd(), newConsoleCmd(), newLoginCmd(), newLogsCmd())
	root.AddCommand(newCopyCmds()...)
	root.AddCommand(newInstallCmd(), newUninstallCmd())
	root.AddCommand(newBindCmd())
	// cobra adds its completion verbs when it first runs: now, so that they
	// are held to the same rules as the others.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			for _, sh := range c.Commands() {
				sh.Example = "  berth completion " + sh.Name() + " > berth." + sh.Name()
			}
			c.Commands()[0].Example = "  berth completion bash > /etc/bash_completion.d/berth"
		}
	}
	refuseUnknownVerbs(root)
	return root
}

// refuseUnknownVerbs makes each command group under cmd (berth image, berth
// network, …) fail on a verb it does not have, as cobra fails on an unknown
// top-level one: "unknown command "bogus" for "berth image"" and what it may
// have meant, exit status 1. Left alone, cobra prints the group's help and
// exits 0, so a script would believe a mistyped verb worked. A group on its
// own prints its help.
func refuseUnknownVerbs(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		if !c.HasSubCommands() {
			continue
		}
		refuseUnknownVerbs(c)
		if c.Runnable() {
			continue
		}
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return unknownCommand(cmd, args[0])
		}
	}
}

// unknownCommand is the error for a verb that group does not have, worded
// as cobra words it for berth's own verbs.
func unknownCommand(group *cobra.Command, verb string) error {
	msg := fmt.Sprintf("unknown command %q for %q", verb, group.CommandPath())
	if group.SuggestionsMinimumDistance <= 0 {
		group.SuggestionsMinimumDistance = 2 // cobra's own default
	}
	if s := group.SuggestionsFor(verb); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t") + "\n"
	}
	return errors.New(msg)
}

// execute runs berth with args, its output to stdout and stderr, and returns
// its exit status.
func execute(args []string, stdout, stderr io.Writer) int {
	return executeContext(context.Background(), args, stdout, stderr)
}

// executeContext is execute with a context whose end stops the verb (a
// berth logs -f, in a test).
func executeContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	rootCmd.SetArgs(args)
	// cobra keeps the context of an earlier Execute in each verb (tests run
	// many in one process): this one's for all.
	setContext(rootCmd, ctx)
	if stdout != os.Stdout {
		// Left unset, cobra writes its own notices (an unknown help topic and
		// the usage after it) to the process's stderr; set, to this writer.
		rootCmd.SetOut(stdout)
	}
	rootCmd.SetErr(stderr)
	return exitCode(rootCmd.ExecuteContext(ctx), stderr)
}

// forEach does a verb's work on each of names, going on past failures: each
// failure is printed on stderr as it happens, as execute prints errors, and
// the exit status is then 1.
func forEach(cmd *cobra.Command, names []string, do func(name string) error) error {
	failed := false
	for _, name := range names {
		if err := do(name); err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "berth:", err)
			failed = true
		}
	}
	if failed {
		return &exitError{code: 1}
	}
	return nil
}

// exitCode maps what a verb returned to berth's exit status, printing the
// error, if any, to stderr: nil is 0, an exitError its own code (as 2 from
// plan: changes pending), any other error 1.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "berth:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "berth:", err)
	return 1
}

// setContext sets ctx as the context of cmd and of all its verbs.
func setContext(cmd *cobra.Command, ctx context.Context) {
	cmd.SetContext(ctx)
	for _, c := range cmd.Commands() {
		setContext(c, ctx)
	}
}
