package machined

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/berthd/berth/internal/logctx"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/machined/host"
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
	h, err := host.Open(cfg.Paths())
	if err != nil {
		return err
	}
	logctx.From(ctx).Info("berthd starting", "version", Version, "driver", h.DriverName(), "state", cfg.StateDir, "socket", cfg.Socket)
	return runDaemon(ctx, cfg, h, daemonHooks())
}

// OpenLocal returns a manager in the calling process, for CLI verbs when no
// daemon runs.
func OpenLocal(p config.Paths) (*Manager, error) {
	h, err := host.Open(p)
	if err != nil {
		return nil, err
	}
	cfg := &config.Config{StateDir: p.StateDir, RuntimeDir: p.RuntimeDir, LogDir: p.LogDir, Socket: p.Socket, Parallelism: 4, Resync: config.Duration(time.Minute)}
	if c, err := config.Load(config.DefaultPath); err == nil && c.StateDir == p.StateDir {
		// The one-shot manager sees the same sources as berthd would.
		cfg.Sources = c.Sources
	}
	return newManager(cfg, h, false)
}
