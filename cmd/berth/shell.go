package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
)

// machineRunDir is a machine's runtime directory; Enter and the console tell
// when no supervisor answers there.
func machineRunDir(name string) (string, error) {
	if err := rundir.CheckName(name); err != nil {
		return "", err
	}
	return rundir.For(cliPaths().RuntimeDir, name).Path(), nil
}

// unknownOr is the manager's error for machine name when it knows no such
// machine (not declared, not running, no root), or else err.
func unknownOr(ctx context.Context, name string, err error) error {
	if ctl, cerr := connect(ctx); cerr == nil {
		if _, serr := ctl.Status(ctx, name); serr != nil {
			return serr
		}
	}
	return err
}

// shellFlags are berth shell's flags.
type shellFlags struct {
	env        []string
	dir        string
	tty, noTTY bool
}

func newShellCmd() *cobra.Command {
	var sf shellFlags
	c := &cobra.Command{
		Use:   "shell NAME [COMMAND [ARG...]]",
		Short: "Open a login shell in a running machine, or run a command there; exits with its exit code",
		Long: `shell runs root's login shell in a running machine, or COMMAND, in all the
machine's namespaces, root and cgroup, with its capabilities and system call
filter; the machine's supervisor starts it, as machinectl shell has systemd
start it. On a terminal it gets a new pty of the machine's own (the guest sees
/dev/pts/N); otherwise new pipes. Nothing of this terminal or of berth's other
files reaches the machine: berth relays. berth exits with the command's exit
code (128+N when signal N ended it), unlike machinectl shell. No daemon is
needed.`,
		Example: `  berth shell web
  berth shell web systemctl is-system-running
  echo hello | berth shell web sh -c 'cat > /tmp/x'`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeMachine,
		RunE: func(cmd *cobra.Command, args []string) error {
			runDir, err := machineRunDir(args[0])
			if err != nil {
				return err
			}
			command := args[1:]
			if len(command) > 0 && command[0] == "--" {
				command = command[1:] // berth shell NAME -- CMD reads well too
			}
			code, err := enterMachine(cmd.Context(), runDir, command, sf)
			if errors.Is(err, container.ErrNotRunning) {
				return unknownOr(cmd.Context(), args[0], fmt.Errorf("machine %q is not running", args[0]))
			}
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	f := c.Flags()
	f.SetInterspersed(false)
	f.StringArrayVarP(&sf.env, "setenv", "E", nil, "KEY=VALUE for the command (repeatable)")
	f.StringVar(&sf.dir, "workdir", "", "working directory in the machine (default /root for a login shell, / otherwise)")
	f.BoolVarP(&sf.tty, "tty", "t", false, "allocate a pty even when stdin is not a terminal")
	f.BoolVarP(&sf.noTTY, "no-tty", "T", false, "never allocate a pty")
	return c
}

// enterMachine runs command (empty: a login shell) in the machine of runDir
// with berth's stdin, stdout and stderr relayed, and returns its exit code:
// on a new pty of the machine's when berth runs on a terminal (or with -t),
// else on pipes, with the signals berth gets passed on.
func enterMachine(ctx context.Context, runDir string, command []string, sf shellFlags) (int, error) {
	opts := container.EnterOptions{Command: command, Env: sf.env, Dir: sf.dir, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	isTTY := term.IsTerminal(int(os.Stdin.Fd())) && term.IsTerminal(int(os.Stdout.Fd()))
	opts.TTY = (isTTY || sf.tty) && !sf.noTTY
	if t := os.Getenv("TERM"); t != "" && opts.TTY {
		opts.Env = append([]string{"TERM=" + t}, opts.Env...)
	}
	if opts.TTY && isTTY {
		opts.Size = func() (uint16, uint16) {
			c, r, _ := term.GetSize(int(os.Stdout.Fd()))
			return uint16(r), uint16(c)
		}
		resized, stop := notifyResized()
		defer stop()
		opts.Resized = resized
		old, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err == nil {
			defer term.Restore(int(os.Stdin.Fd()), old)
		}
	} else {
		// Without a pty to carry them, the signals a terminal or a
		// supervisor sends berth go to the command in the machine.
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
		defer signal.Stop(sigs)
		opts.Signals = sigs
	}
	if opts.TTY {
		// Signals typed at the terminal go through the pty.
		signal.Ignore(syscall.SIGINT, syscall.SIGQUIT)
	}
	return container.Enter(ctx, runDir, opts)
}
