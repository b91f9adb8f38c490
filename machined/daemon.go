package machined

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/berthd/berth/internal/logctx"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/config"
)

// serviceHooks connect berthd to its service manager (sd_notify under systemd).
type serviceHooks struct {
	// Ready is called once the first reconcile pass has run.
	Ready func()
	// Status reports a one-line state ("3 machines running").
	Status func(string)
	// Extend asks the service manager for more start-up time (EXTEND_TIMEOUT_USEC):
	// the first pass may build images with debootstrap for minutes.
	Extend func(time.Duration)
	// Watchdog pings the service manager's watchdog until ctx ends, each time
	// alive says berthd is healthy.
	Watchdog func(ctx context.Context, alive func() bool)
	// Reloading announces a reload (SIGHUP); Ready follows when it is done.
	Reloading func()
}

// runDaemon is berthd: it serves the API, watches the sources, and reconciles
// on start-up, on changes, on machine exits, on API calls and periodically,
// until ctx ends. The machines keep running after it returns.
func runDaemon(ctx context.Context, cfg *config.Config, host Host, hooks serviceHooks) error {
	m, err := newManager(cfg, host, true)
	if err != nil {
		return err
	}
	defer m.stopWatching()

	serveErr := make(chan error, 1)
	go func() { serveErr <- api.Serve(ctx, cfg.Socket, m) }()

	w, err := m.sources.WatchDirs(ctx, func() {
		m.events.Emit(api.Event{Kind: api.EvSourceUpdated, Message: "definition files changed"})
		m.trigger()
	})
	if err != nil {
		logctx.From(ctx).Warn("watching definition directories failed; relying on the periodic resync", "err", err)
	} else {
		defer w.Close()
	}

	// SIGHUP (systemctl reload berthd) re-reads every source and reconciles
	// now; taken from the start, so an early one does not end berthd.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	firstDone := make(chan struct{})
	if hooks.Extend != nil {
		go extendStartup(ctx, hooks.Extend, firstDone)
	}
	m.sources.PollGit(ctx)
	if _, err := m.reconcile(ctx, false); err != nil {
		logctx.From(ctx).Error("first reconcile", "err", err)
	}
	close(firstDone)
	if hooks.Ready != nil {
		hooks.Ready()
	}
	m.reportStatus(ctx, hooks)

	if hooks.Watchdog != nil {
		go hooks.Watchdog(ctx, m.healthy)
	}
	return m.loop(ctx, cfg, hooks, serveErr, hup)
}

// extendStartup asks the service manager for more start-up time until the
// first pass is done, but only as long as a pass may run (maxPass): a first
// pass that hangs lets the start fail, and systemd restarts berthd.
func extendStartup(ctx context.Context, extend func(time.Duration), firstDone <-chan struct{}) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for start := time.Now(); time.Since(start) < maxPass; {
		extend(90 * time.Second)
		select {
		case <-firstDone:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// loop reconciles on every reason there is (a Git source moved, SIGHUP, a
// trigger from the API or a watcher, the periodic resync) until ctx ends or
// the API server fails.
func (m *Manager) loop(ctx context.Context, cfg *config.Config, hooks serviceHooks, serveErr <-chan error, hup <-chan os.Signal) error {
	resync := time.NewTicker(time.Duration(cfg.Resync))
	defer resync.Stop()
	gitTick := time.NewTicker(m.sources.GitInterval())
	defer gitTick.Stop()
	reloading := false
	for {
		select {
		case <-ctx.Done():
			logctx.From(ctx).Info("berthd stopping; machines keep running")
			return nil
		case err := <-serveErr:
			if err != nil {
				return err
			}
			return nil
		case <-gitTick.C:
			if !m.sources.PollGit(ctx) {
				continue
			}
			m.events.Emit(api.Event{Kind: api.EvSourceUpdated, Message: "a Git source moved to a new commit"})
		case <-hup:
			logctx.From(ctx).Info("SIGHUP: reading the definitions again")
			if hooks.Reloading != nil {
				hooks.Reloading()
				reloading = true // Ready follows the pass below
			}
			m.sources.PollGit(ctx)
			m.events.Emit(api.Event{Kind: api.EvSourceUpdated, Message: "reload (SIGHUP)"})
		case <-m.kicks():
		case <-resync.C:
		}
		if _, err := m.reconcile(ctx, false); err != nil {
			logctx.From(ctx).Error("reconcile", "err", err)
		}
		if reloading && hooks.Ready != nil {
			hooks.Ready()
		}
		reloading = false
		m.reportStatus(ctx, hooks)
	}
}

// maxPass is how long one reconcile pass may run (building an image with
// debootstrap takes minutes) before berthd counts as hung.
const maxPass = 30 * time.Minute

// healthy reports whether berthd is working: between passes, or in a pass that
// has not run longer than maxPass. The watchdog asks it beside the main loop,
// so a long but working pass (an image build) does not get berthd killed.
func (m *Manager) healthy() bool {
	m.mu.Lock()
	since := m.passStarted
	m.mu.Unlock()
	if since.IsZero() || time.Since(since) < maxPass {
		return true
	}
	slog.Error("a reconcile pass has run too long; the watchdog will restart berthd (machines keep running)", "since", since)
	return false
}

func (m *Manager) reportStatus(ctx context.Context, hooks serviceHooks) {
	if hooks.Status == nil {
		return
	}
	list, err := m.List(ctx)
	if err != nil {
		return
	}
	running := 0
	for _, s := range list {
		if s.State == api.StateRunning {
			running++
		}
	}
	hooks.Status(pluralize(running, "machine") + " running, " + pluralize(len(list), "machine") + " known")
}

func pluralize(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}
