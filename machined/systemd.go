package machined

import (
	"log/slog"
	"os"
	"time"

	"github.com/berthd/berth/units"
)

// The daemon's side of systemd: berthd's sd_notify and its journal logging.
// The supervisors' side (the scope driver, systemd-machined registration) is
// package supervisor's.

// daemonHooks connects berthd to systemd: READY=1 after the first reconcile,
// STATUS= lines, and watchdog pings (berthd.service has WatchdogSec). Outside
// systemd they do nothing. NOTIFY_SOCKET is taken out of the environment here,
// before berthd starts any supervisor.
func daemonHooks() serviceHooks {
	n, err := units.NewNotifier()
	if err != nil {
		slog.Warn("sd_notify", "err", err)
	}
	if !n.Enabled() {
		return serviceHooks{}
	}
	h := serviceHooks{
		Ready:  func() { _ = n.Ready("first reconcile done") },
		Status: func(s string) { _ = n.Status(s) },
		Extend: func(d time.Duration) { _ = n.ExtendTimeout(d) },
	}
	h.Watchdog = n.Watchdog
	h.Reloading = func() { _ = n.Reloading() }
	return h
}

// setupLogging makes berthd's default logger: the journal, with MACHINE= and
// the other keys as fields, when berthd runs under systemd; text on stderr
// otherwise.
func setupLogging() {
	slog.SetDefault(slog.New(units.NewLogHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()})))
}
