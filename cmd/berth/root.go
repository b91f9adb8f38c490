package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
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
}

var rootCmd = &cobra.Command{
	Use:   "berth",
	Short: "Declarative machine manager: full-OS system containers from YAML definitions",
	Long: `berth manages machines: full-OS system containers that boot their own init,
declared in YAML files. berthd reconciles the host toward the definitions;
berth is the command line, in the style of machinectl.`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

func init() {
	def := os.Getenv("BERTH_STATE_DIR")
	if def == "" {
		def = "/var/lib/berth"
	}
	rootCmd.PersistentFlags().StringVar(&globals.stateDir, "state-dir", def, "berth's state directory (env BERTH_STATE_DIR)")
	rootCmd.PersistentFlags().StringVar(&globals.runtimeDir, "runtime-dir", os.Getenv("BERTH_RUNTIME_DIR"), "berth's runtime directory (env BERTH_RUNTIME_DIR; default /run/berth)")
	rootCmd.PersistentFlags().StringVar(&globals.socket, "socket", "", "berthd's API socket (default RUNTIME-DIR/berthd.sock)")
	rootCmd.PersistentFlags().StringVarP(&globals.output, "output", "o", "table", "output format: table or json")
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
