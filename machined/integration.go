package machined

import (
	"context"
	"log/slog"
	"os"

	"github.com/berthd/berth/internal/logctx"
	"github.com/berthd/berth/machined/config"
)

// The systemd integration points (detectDriver, systemdHooks, daemonHooks,
// setupLogging) are in systemd.go.

// logLevel is berthd's log level: info, or $BERTH_LOG_LEVEL (debug, warn, error).
func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("BERTH_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// Main runs berthd with cfg until ctx ends.
func Main(ctx context.Context, cfg *config.Config) error {
	setupLogging()
	ctx = logctx.With(ctx, slog.Default())
	h, err := newLeafHost(cfg.Paths())
	if err != nil {
		return err
	}
	logctx.From(ctx).Info("berthd starting", "version", Version, "driver", h.driver, "state", cfg.StateDir, "socket", cfg.Socket)
	return RunDaemon(ctx, cfg, h, daemonHooks())
}
