package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berthd/berth/container"
)

func newLoginCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "login NAME",
		Short: "Get a login prompt on a new pty in a running machine; ^] three times within 1s exits",
		Long: `login opens a new pty in a running machine's own devpts and gives it a login
prompt, as machinectl login does: in a systemd guest its own getty
(container-getty@N.service on /dev/pts/N, which the guest's systemd starts
and berth stops again when it exits); in a guest with another init its login
program when it has one, else root's login shell (berth says which). Logging
out of a getty gets a new prompt; press Ctrl-] three times within a second to
end the session. The machine keeps running. No daemon is needed; on a
systemd host, machinectl login NAME works for berth's machines too.`,
		Example: `  berth login web
  machinectl login web`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeMachines,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLogin(cmd.Context(), args[0], cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
}

// runLogin relays this terminal (os.Stdin, out) to a login prompt in machine
// name; berth's own lines go to errOut.
func runLogin(ctx context.Context, name string, out, errOut io.Writer) error {
	runDir, err := machineRunDir(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	interactive := term.IsTerminal(int(os.Stdin.Fd()))
	opts := container.EnterOptions{Stdin: os.Stdin, Stdout: out}
	if t := os.Getenv("TERM"); t != "" {
		opts.Env = []string{"TERM=" + t}
	}
	if interactive {
		opts.Size = termSize
		resized, stop := notifyResized()
		defer stop()
		opts.Resized = resized
		old, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err != nil {
			return fmt.Errorf("terminal: %w", err)
		}
		defer term.Restore(int(os.Stdin.Fd()), old)
		opts.Stdin = &container.EscapeReader{R: os.Stdin, OnEscape: cancel}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	code, err := container.Login(ctx, runDir, opts, func(how, tty string) {
		exit := "Press ^] three times within 1s to exit the session."
		switch how {
		case container.LoginGetty:
			fmt.Fprintf(errOut, "Connected to machine %s (its getty on %s). %s\r\n", name, tty, exit)
		case container.LoginProgram:
			fmt.Fprintf(errOut, "Machine %s runs no systemd: its login program on a new pty. %s\r\n", name, exit)
		default:
			fmt.Fprintf(errOut, "Machine %s runs no systemd and has no login program: root's shell on a new pty. %s\r\n", name, exit)
		}
	})
	switch {
	case errors.Is(err, container.ErrNotRunning):
		return notRunning(ctx, name)
	case ctx.Err() != nil:
		fmt.Fprintf(errOut, "\r\nConnection to machine %s closed.\r\n", name)
		return nil
	case err != nil:
		return fmt.Errorf("machine %q: %w", name, err)
	case code != 0:
		return &exitError{code: code}
	}
	fmt.Fprintf(errOut, "\r\nConnection to machine %s terminated.\r\n", name)
	return nil
}
