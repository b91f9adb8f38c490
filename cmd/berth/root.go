package main

import (
	"errors"
	"fmt"
	"io"
	"os"

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

	root.AddCommand(newListCmd(), newStatusCmd(), newKillCmd())
	root.AddCommand(newLifecycleCmds()...)
	root.AddCommand(newPlanCmd(), newApplyCmd(), newEventsCmd(), newValidateCmd(), newSchemaCmd())
	root.AddCommand(newImageCmd(), newCloneCmd(), newRemoveCmd(), newNetworkCmd())
	root.AddCommand(newBootCmd(), newShellCmd(), newLogsCmd())
	root.AddCommand(newInstallCmd(), newUninstallCmd())
	root.AddCommand(newBindCmd())
	return root
}

// execute runs berth with args, its output to stdout and stderr, and returns
// its exit status.
func execute(args []string, stdout, stderr io.Writer) int {
	rootCmd.SetArgs(args)
	if stdout != os.Stdout {
		// Left unset, cobra writes its own notices (an unknown help topic and
		// the usage after it) to the process's stderr; set, to this writer.
		rootCmd.SetOut(stdout)
	}
	rootCmd.SetErr(stderr)
	return exitCode(rootCmd.Execute(), stderr)
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
