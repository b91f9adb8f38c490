package machined

import (
	"context"
	"log/slog"
	"os"

	"github.com/berthd/berth/container"
)

// The systemd integration points. Without systemd (or before package units is
// wired in) machines use the cgroupfs driver, nothing registers them with
// systemd-machined, and berthd logs to stderr.

// detectDriver picks the cgroup driver the supervisors use.
func detectDriver() string { return "cgroupfs" }

// systemdHooks adds the systemd scope driver and the systemd-machined
// registration to a supervisor's hooks when the host runs systemd.
func systemdHooks(ctx context.Context, h *container.Hooks, cfg container.Config, w *wiring) error {
	return nil
}

// daemonHooks connects berthd to its service manager.
func daemonHooks() DaemonHooks { return DaemonHooks{} }

// setupLogging makes berthd's default logger.
func setupLogging() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()})))
}

// logLevel is berthd's log level: info, or $BERTH_LOG_LEVEL (debug, warn, error).
func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("BERTH_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// Main runs berthd with cfg until ctx ends.
func Main(ctx context.Context, cfg *Config) error {
	setupLogging()
	h, err := newLeafHost(cfg.Paths())
	if err != nil {
		return err
	}
	slog.Info("berthd starting", "version", Version, "driver", h.driver, "state", cfg.StateDir, "socket", cfg.Socket)
	return RunDaemon(ctx, cfg, h, daemonHooks())
}
