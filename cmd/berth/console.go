package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berthd/berth/container"
)

func newConsoleCmd() *cobra.Command {
	var readOnly bool
	c := &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to a running machine's console; ^] three times within 1s detaches",
		Long: `console attaches this terminal to the console of a running machine (what its
init and getty print, what berth logs keeps), which the machine's supervisor
holds: of a machine berthd started or one berth boot runs. Several may watch at once; one at a
time types into it, the first that attaches (with berth boot on a terminal,
that terminal). A second writer is refused with the PID of the first:
--read-only watches without typing. The writer's terminal size is the
console's.

On a terminal, press Ctrl-] three times within a second to detach: the
machine keeps running (with --read-only, Ctrl-C detaches too). Without a
terminal, stdin is typed into the console (until it ends; then berth goes on
printing) and the console is printed to stdout. berth console returns when
the machine stops, saying how it ended. No daemon is needed.`,
		Example: `  berth console web
  berth console --read-only web
  printf 'root\n' | berth console web`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeMachines,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConsole(cmd.Context(), args[0], readOnly, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	c.Flags().BoolVar(&readOnly, "read-only", false, "watch the console without typing into it")
	return c
}

// notRunning is the error for a machine that no supervisor answers for.
func notRunning(ctx context.Context, name string) error {
	return unknownOr(ctx, name, fmt.Errorf("machine %q is not running (berth list shows the machines)", name))
}

// termSize is the size of this process's terminal (0, 0 without one).
func termSize() (rows, cols uint16) {
	for _, f := range []*os.File{os.Stdout, os.Stdin} {
		if c, r, err := term.GetSize(int(f.Fd())); err == nil {
			return uint16(r), uint16(c)
		}
	}
	return 0, 0
}

// runConsole attaches to machine name's console until the machine stops,
// the user detaches or berth gets SIGINT, SIGTERM or SIGHUP: the console to
// out, berth's own lines to errOut, os.Stdin typed into it.
func runConsole(ctx context.Context, name string, readOnly bool, out, errOut io.Writer) error {
	runDir, err := machineRunDir(name)
	if err != nil {
		return err
	}
	c, err := container.Dial(runDir)
	if errors.Is(err, container.ErrNotRunning) {
		return notRunning(ctx, name)
	} else if err != nil {
		return fmt.Errorf("machine %q: %w", name, err)
	}
	interactive := term.IsTerminal(int(os.Stdin.Fd()))
	var opts container.AttachOptions
	opts.Write = !readOnly
	if interactive {
		opts.Rows, opts.Cols = termSize()
	}
	conn, at, err := c.AttachConsole(ctx, opts)
	if err != nil {
		return fmt.Errorf("machine %q: console: %w", name, err)
	}
	defer conn.Close()
	if opts.Write && !at.Writing {
		return fmt.Errorf("machine %q: the console already has a writer (%s); berth console --read-only %s watches it", name, at.Writer, name)
	}

	over := make(chan string, 4)
	end := func(why string) {
		select {
		case over <- why:
		default:
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		<-sigs
		end("detached")
	}()
	go func() {
		_, _ = io.Copy(out, conn)
		end("ended")
	}()
	switch {
	case interactive:
		old, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err != nil {
			return fmt.Errorf("terminal: %w", err)
		}
		defer term.Restore(int(os.Stdin.Fd()), old)
		if readOnly {
			fmt.Fprintf(errOut, "Watching the console of machine %s (read-only). Press ^] three times within 1s, or Ctrl-C, to detach.\r\n", name)
		} else {
			fmt.Fprintf(errOut, "Connected to the console of machine %s. Press ^] three times within 1s to detach.\r\n", name)
			resized, stop := notifyResized()
			defer stop()
			go func() {
				for range resized {
					if r, cl := termSize(); r > 0 && cl > 0 {
						_ = c.Resize(ctx, r, cl)
					}
				}
			}()
		}
		go typeInto(conn, readOnly, func() { end("detached") })
	case !readOnly:
		go func() {
			_, _ = io.Copy(conn, os.Stdin)
			// Give up typing, go on printing.
			if uc, ok := conn.(*net.UnixConn); ok {
				_ = uc.CloseWrite()
			}
		}()
	}
	why := <-over
	conn.Close()
	if interactive {
		fmt.Fprint(errOut, "\r\n")
	}
	switch why {
	case "detached":
		if interactive {
			fmt.Fprintf(errOut, "Detached from the console of machine %s; it keeps running.\r\n", name)
		}
	case "ended":
		if st, err := container.ReadState(runDir); err == nil && st.Exit != nil {
			fmt.Fprintf(errOut, "Machine %s ended: %s.\r\n", name, *st.Exit)
		} else {
			fmt.Fprintf(errOut, "The console of machine %s closed: its supervisor ended.\r\n", name)
		}
	}
	return nil
}

// typeInto types this terminal's input into the console connection (with
// readOnly: nothing, Ctrl-C detaches) until ^] ^] ^] detaches.
func typeInto(conn net.Conn, readOnly bool, detach func()) {
	in := &container.EscapeReader{R: os.Stdin, OnEscape: detach}
	buf := make([]byte, 4096)
	for {
		n, err := in.Read(buf)
		if readOnly {
			if bytes.IndexByte(buf[:n], 0x03) >= 0 {
				detach()
			}
		} else if n > 0 {
			if _, werr := conn.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
