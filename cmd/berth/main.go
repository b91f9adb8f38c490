// Command berth is the machinectl-style command line of berth.
package main

import (
	"log/slog"
	"os"

	"github.com/berthd/berth/container"
)

func main() {
	// The berth binary is also the machine supervisor's payload stage: when it was
	// re-executed for that, Reexec runs the stage and never returns.
	container.Reexec()
	// Verbs print their own results; the libraries' logs are for warnings only.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}
