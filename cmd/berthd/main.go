// Command berthd is the berth daemon: it reconciles the host toward the declared
// machines and keeps them in their declared state.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/machined"
	"github.com/berthd/berth/machined/config"
)

func main() {
	// berthd re-executes itself as each machine's supervisor.
	container.Reexec()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs berthd with args and returns its exit status: 0 when it stopped
// cleanly (or printed its version or usage), 2 for a wrong flag, 1 on errors.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("berthd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", config.DefaultPath, "configuration file")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: berthd [--config FILE]\n\nberthd reconciles the host toward the machines declared in its sources\n(see %s) and serves the berth command line on its socket.\n\n", config.DefaultPath)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2 // as flag.ExitOnError: the flag package printed the error and the usage
	}
	if *version {
		fmt.Fprintln(stdout, "berthd", machined.Version)
		return 0
	}
	if err := serve(*configPath); err != nil {
		fmt.Fprintln(stderr, "berthd:", err)
		return 1
	}
	return 0
}

// serve runs the daemon with the configuration file path until SIGINT or
// SIGTERM.
func serve(path string) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return machined.Main(ctx, cfg)
}
