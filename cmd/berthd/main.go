// Command berthd is the berth daemon: it reconciles the host toward the declared
// machines and keeps them in their declared state.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/machined"
)

func main() {
	// berthd re-executes itself as each machine's supervisor.
	container.Reexec()

	config := flag.String("config", machined.DefaultConfigPath, "configuration file")
	version := flag.Bool("version", false, "print the version and exit")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: berthd [--config FILE]\n\nberthd reconciles the host toward the machines declared in its sources\n(see %s) and serves the berth command line on its socket.\n\n", machined.DefaultConfigPath)
		flag.PrintDefaults()
	}
	flag.Parse()
	if *version {
		fmt.Println("berthd", machined.Version)
		return
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "berthd: must run as root")
		os.Exit(1)
	}
	cfg, err := machined.LoadConfig(*config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "berthd:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := machined.Main(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "berthd:", err)
		os.Exit(1)
	}
}
