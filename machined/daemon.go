package machined

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/config"
	"github.com/fsnotify/fsnotify"
)

// DaemonHooks connect berthd to its service manager (sd_notify under systemd).
type DaemonHooks struct {
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

// RunDaemon is berthd: it serves the API, watches the sources, and reconciles
// on start-up, on changes, on machine exits, on API calls and periodically,
// until ctx ends. The machines keep running after it returns.
func RunDaemon(ctx context.Context, cfg *config.Config, host Host, hooks DaemonHooks) error {
	m, err := NewManager(cfg, host, true)
	if err != nil {
		return err
	}
	defer m.StopWatching()

	serveErr := make(chan error, 1)
	go func() { serveErr <- api.Serve(ctx, cfg.Socket, m) }()

	if len(m.sources.dirs) > 0 {
		w, err := m.watchDirs(ctx)
		if err != nil {
			loggerFrom(ctx).Warn("watching definition directories failed; relying on the periodic resync", "err", err)
		} else {
			defer w.Close()
		}
	}

	// SIGHUP (systemctl reload berthd) re-reads every source and reconciles
	// now; taken from the start, so an early one does not end berthd.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	firstDone := make(chan struct{})
	if hooks.Extend != nil {
		go func() {
			t := time.NewTicker(30 * time.Second)
			defer t.Stop()
			// Only as long as a pass may run (maxPass): a first pass that hangs
			// lets the start fail, and systemd restarts berthd.
			for start := time.Now(); time.Since(start) < maxPass; {
				hooks.Extend(90 * time.Second)
				select {
				case <-firstDone:
					return
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	m.sources.pollGit(ctx)
	if _, err := m.Reconcile(ctx, false); err != nil {
		loggerFrom(ctx).Error("first reconcile", "err", err)
	}
	close(firstDone)
	if hooks.Ready != nil {
		hooks.Ready()
	}
	m.reportStatus(ctx, hooks)

	resync := time.NewTicker(time.Duration(cfg.Resync))
	defer resync.Stop()
	gitTick := time.NewTicker(m.gitInterval())
	defer gitTick.Stop()
	if hooks.Watchdog != nil {
		go hooks.Watchdog(ctx, m.healthy)
	}
	reloading := false
	for {
		select {
		case <-ctx.Done():
			loggerFrom(ctx).Info("berthd stopping; machines keep running")
			return nil
		case err := <-serveErr:
			if err != nil {
				return err
			}
			return nil
		case <-gitTick.C:
			if !m.sources.pollGit(ctx) {
				continue
			}
			m.events.Emit(api.Event{Kind: api.EvSourceUpdated, Message: "a Git source moved to a new commit"})
		case <-hup:
			loggerFrom(ctx).Info("SIGHUP: reading the definitions again")
			if hooks.Reloading != nil {
				hooks.Reloading()
				reloading = true // Ready follows the pass below
			}
			m.sources.pollGit(ctx)
			m.events.Emit(api.Event{Kind: api.EvSourceUpdated, Message: "reload (SIGHUP)"})
		case <-m.Kicks():
		case <-resync.C:
		}
		if _, err := m.Reconcile(ctx, false); err != nil {
			loggerFrom(ctx).Error("reconcile", "err", err)
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

func (m *Manager) gitInterval() time.Duration {
	iv := time.Hour
	for _, g := range m.sources.gits {
		if d := time.Duration(g.cfg.Interval); d > 0 && d < iv {
			iv = d
		}
	}
	return iv
}

func (m *Manager) reportStatus(ctx context.Context, hooks DaemonHooks) {
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

// watchDirs triggers a reconcile shortly after any change under the configured
// directories (editors write several events per save: they are coalesced).
func (m *Manager) watchDirs(ctx context.Context) (*fsnotify.Watcher, error) {
	if len(m.sources.dirs) == 0 {
		return nil, errors.New("no directories to watch")
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	add := func(root string) {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = w.Add(p)
			}
			return nil
		})
	}
	for _, d := range m.sources.dirs {
		if _, err := os.Stat(d); err != nil {
			// Watch the parent so the directory's creation is noticed.
			_ = w.Add(filepath.Dir(d))
			continue
		}
		add(d)
	}
	go func() {
		var debounce <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Has(fsnotify.Create) {
					if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
						add(ev.Name)
					}
				}
				debounce = time.After(300 * time.Millisecond)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				loggerFrom(ctx).Warn("watching definitions", "err", err)
			case <-debounce:
				debounce = nil
				m.events.Emit(api.Event{Kind: api.EvSourceUpdated, Message: "definition files changed"})
				m.Trigger()
			}
		}
	}()
	return w, nil
}
