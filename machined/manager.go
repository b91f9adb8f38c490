package machined

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berthd/berth/internal/logctx"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/machined/events"
	"github.com/berthd/berth/machined/plan"
	"github.com/berthd/berth/machined/sources"
	"github.com/berthd/berth/machined/store"
	"github.com/berthd/berth/spec"
)

// Host is the reconciler's view of the machine it runs on: observing it and the
// side effects of each kind of action. The real one (host.Host) drives the
// container, rootfs, netconf and units packages; tests of the reconciler's logic
// may use a small fake.
type Host interface {
	Observe(ctx context.Context, d *spec.Set) (*plan.Observed, error)
	EnsureNetwork(ctx context.Context, n *spec.Network) error
	RemoveNetwork(ctx context.Context, name string) error
	BuildImage(ctx context.Context, img *spec.Image) error
	// StartMachine makes the machine's root when it has none, attaches it to its
	// network, starts its supervisor, and returns once the payload runs.
	StartMachine(ctx context.Context, d *spec.Set, m *spec.Machine) error
	// StopMachine powers the machine off cleanly (SIGKILL after its stop timeout),
	// or at once with terminate, and returns when every process of it is gone,
	// with how it ended (nil when it was not running).
	StopMachine(ctx context.Context, name string, terminate bool) (*api.ExitInfo, error)
	// Forget marks a machine's exit as handled, so it is not handled again.
	Forget(name string)
	// UpdateMachine changes a running machine's limits live.
	UpdateMachine(ctx context.Context, m *spec.Machine) error
	RepairMachine(ctx context.Context, d *spec.Set, m *spec.Machine) error
	RemoveRoot(ctx context.Context, name string) error
	ApplyRules(ctx context.Context, d *spec.Set) error
	// Wait returns when the running machine exits, with how it ended.
	Wait(ctx context.Context, name string) (api.ExitInfo, error)
	// Signal sends a signal (reboot, kill) to a running machine.
	Signal(ctx context.Context, name string, req api.KillRequest) error
	Reboot(ctx context.Context, name string) error
	// Describe adds what berth status shows beyond berth list: resource usage
	// and the console's last lines.
	Describe(ctx context.Context, st *api.MachineStatus)
	NetworkStatus(ctx context.Context, d *spec.Set) []api.NetworkStatus
	DriverName() string
}

// Manager is the reconciler and the implementation of API. berthd runs one for
// its life; the CLI makes one for a single verb when no daemon runs.
type Manager struct {
	cfg     *config.Config
	host    Host
	store   *store.Store
	events  *events.Log
	sources *sources.Set
	daemon  bool // supervise exits (restart policy); false for one-shot CLI use

	pass    sync.Mutex // one reconcile pass at a time
	mu      sync.Mutex // guards the fields below
	desired *spec.Set  // last good definitions
	defErrs []string   // errors of the last load (the last good set stays in force)
	lastRun time.Time
	started time.Time
	// passStarted is when the running reconcile pass began (zero between passes).
	passStarted time.Time
	watched     map[string]*watcher // machines whose exit we wait for
	kick        chan struct{}
	gate        *gate // actions at once: apply's and berth start's
}

// newManager makes a reconciler for cfg over host. daemon says whether it
// watches machines for exits and restarts them (berthd) or only acts once (CLI).
func newManager(cfg *config.Config, host Host, daemon bool) (*Manager, error) {
	stateDir := filepath.Join(cfg.StateDir, "berthd")
	store, err := store.Open(stateDir)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		gate:    newGate(max(1, cfg.Parallelism)),
		cfg:     cfg,
		host:    host,
		store:   store,
		events:  events.Open(filepath.Join(stateDir, "events.jsonl")),
		sources: sources.New(cfg),
		daemon:  daemon,
		started: time.Now(),
		watched: map[string]*watcher{},
		kick:    make(chan struct{}, 1),
	}
	if h, ok := host.(interface{ UseEvents(*events.Log) }); ok {
		h.UseEvents(m.events) // long work (image builds) reports progress there
	}
	return m, nil
}

// trigger asks for a reconcile pass soon (coalesced).
func (m *Manager) trigger() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// kicks delivers the reconcile requests of Trigger.
func (m *Manager) kicks() <-chan struct{} { return m.kick }

func newReconcileID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// loadDesired reads every source. On definition errors the last good set stays
// in force (so a typo in one file never stops the machines of the others) and
// the errors are reported.
func (m *Manager) loadDesired(ctx context.Context, extra *sources.Snapshot) (*spec.Set, []string) {
	set, errs := m.sources.Load(ctx, extra)
	m.mu.Lock()
	defer m.mu.Unlock()
	if extra != nil {
		// A what-if load (plan PATH, or apply PATH before it is accepted).
		return set, errs
	}
	if len(errs) > 0 {
		if !slices.Equal(errs, m.defErrs) {
			for _, e := range errs {
				m.events.Emit(api.Event{Kind: api.EvDefinitionError, Message: e})
			}
		}
		m.defErrs = errs
		return m.desired, errs
	}
	m.defErrs = nil
	m.desired = set
	return set, nil
}

func (m *Manager) records() map[string]store.Record {
	m.store.Reload()
	out := map[string]store.Record{}
	for _, n := range m.store.Names() {
		out[n] = m.store.Get(n)
	}
	return out
}

// reconcile runs one pass: load, observe, plan, apply. It returns what it did.
func (m *Manager) reconcile(ctx context.Context, prune bool) (*api.ApplyResult, error) {
	m.pass.Lock()
	defer m.pass.Unlock()
	id := newReconcileID()
	log := logctx.From(ctx).With("reconcile", id)
	ctx = logctx.With(ctx, log)

	t0 := time.Now()
	m.mu.Lock()
	m.passStarted = t0
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.passStarted = time.Time{}
		m.mu.Unlock()
	}()
	desired, errs := m.loadDesired(ctx, nil)
	tLoad := time.Since(t0)
	if desired == nil {
		desired = &spec.Set{}
		if len(errs) > 0 {
			// Nothing was ever loaded cleanly: do not act on an empty set, which
			// would stop every running machine.
			return &api.ApplyResult{Plan: &api.Plan{Errors: errs}}, fmt.Errorf("definitions have errors; nothing applied")
		}
	}
	t1 := time.Now()
	obs, err := m.host.Observe(ctx, desired)
	if err != nil {
		return nil, fmt.Errorf("observe: %w", err)
	}
	tObserve := time.Since(t1)
	m.adopt(obs)
	t2 := time.Now()
	plan := plan.Build(desired, obs, m.records(), plan.Options{Prune: prune})
	plan.Errors = errs
	tPlan := time.Since(t2)
	res := m.apply(ctx, id, desired, plan)
	log.Debug("reconcile pass", "load", tLoad, "observe", tObserve, "plan", tPlan, "total", time.Since(t0), "machines", len(desired.Machines))
	m.mu.Lock()
	m.lastRun = time.Now()
	m.mu.Unlock()
	if len(plan.Actions) > 0 {
		log.Info("reconciled", "actions", len(plan.Actions), "failed", countFailed(res))
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("definitions have errors; the last good definitions stay in force:\n  %s", strings.Join(errs, "\n  "))
	}
	return res, nil
}

func countFailed(r *api.ApplyResult) int {
	n := 0
	for _, a := range r.Results {
		if a.Error != "" {
			n++
		}
	}
	return n
}

// apply runs a plan's actions, each once the actions it needs have
// succeeded, as many at once as the gate admits (see gate). One failing action never
// stops the others: those that need it fail with it (naming it), the rest go
// on; each failure is recorded and reported.
func (m *Manager) apply(ctx context.Context, id string, d *spec.Set, p *api.Plan) *api.ApplyResult {
	res := &api.ApplyResult{Plan: p}
	results := make([]api.ActionResult, len(p.Actions))
	index := map[string]int{}
	for i, a := range p.Actions {
		index[a.ID()] = i
	}
	done := make([]chan struct{}, len(p.Actions))
	for i := range done {
		done[i] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for i, a := range p.Actions {
		if a.Op == api.OpNote {
			close(done[i])
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[i])
			var err error
			for _, id := range append(append([]string{}, a.Needs...), a.After...) {
				if j, ok := index[id]; ok {
					<-done[j]
				}
			}
			for _, need := range a.Needs {
				if j, ok := index[need]; ok && results[j].Error != "" && err == nil {
					err = fmt.Errorf("%s failed: %s", need, results[j].Error)
				}
			}
			if err == nil {
				if err = m.gate.acquire(ctx); err == nil {
					err = m.do(ctx, id, d, a)
					m.gate.release()
				}
			}
			results[i] = api.ActionResult{Action: a}
			if err != nil {
				results[i].Error = err.Error()
			}
		}()
	}
	wg.Wait()
	for i, r := range results {
		if p.Actions[i].Op == api.OpNote || (p.Actions[i].Reason == plan.RulesFollow && r.Error == "") {
			continue
		}
		res.Results = append(res.Results, r)
	}
	return res
}

// do applies one action and records its outcome in the event log.
func (m *Manager) do(ctx context.Context, id string, d *spec.Set, a api.Action) error {
	log := logctx.From(ctx)
	ev := api.Event{Reconcile: id}
	var err error
	switch a.Kind {
	case api.KindNetwork:
		ev.Network = a.Name
		if a.Op == api.OpRemove {
			err = m.host.RemoveNetwork(ctx, a.Name)
			ev.Kind = api.EvNetworkRemoved
		} else {
			err = m.host.EnsureNetwork(ctx, d.Network(a.Name))
			ev.Kind = api.EvNetworkCreated
			if a.Op == api.OpRepair {
				ev.Kind = api.EvDriftFixed
			}
		}
	case api.KindImage:
		ev.Image = a.Name
		ev.Kind = api.EvImageBuilt
		err = m.host.BuildImage(ctx, d.Image(a.Name))
	case api.KindRules:
		// Rules follow the machines that run; a change is routine, not news.
		if err = m.host.ApplyRules(ctx, d); err == nil {
			log.Debug("applied", "op", a.Op, "kind", a.Kind, "reason", a.Reason)
			return nil
		}
	case api.KindMachine:
		ev.Machine = a.Name
		err = m.doMachine(ctx, d, a, &ev)
	}
	if err != nil {
		log.Error("action failed", "op", a.Op, "kind", a.Kind, "name", a.Name, "err", err)
		ev.Kind = api.EvReconcileError
		if a.Kind == api.KindMachine && (a.Op == api.OpStart || a.Op == api.OpRestart || a.Op == api.OpRecreate) {
			// A machine that cannot start is failed until a start succeeds; a
			// failed live update or repair is reported and tried again.
			ev.Kind = api.EvMachineFailed
			_ = m.store.Update(a.Name, func(r *store.Record) { r.LastError = err.Error() })
		}
		ev.Message = fmt.Sprintf("%s %s %s: %v", a.Op, a.Kind, a.Name, err)
		m.events.Emit(ev)
		return err
	}
	if ev.Kind != "" {
		if ev.Message == "" {
			ev.Message = fmt.Sprintf("%s %s %s: %s", a.Op, a.Kind, a.Name, a.Reason)
		}
		m.events.Emit(ev)
	}
	log.Info("applied", "op", a.Op, "kind", a.Kind, "name", a.Name, "reason", a.Reason)
	return nil
}

func (m *Manager) doMachine(ctx context.Context, d *spec.Set, a api.Action, ev *api.Event) error {
	mm := d.Machine(a.Name)
	switch a.Op {
	case api.OpStart:
		m.clearStaleHold(mm)
		ev.Kind = api.EvMachineStarted
		return m.start(ctx, d, mm)
	case api.OpRestart:
		ev.Kind = api.EvMachineStarted
		ev.Message = "restarted to apply: " + strings.Join(a.Changes, ", ")
		if err := m.stop(ctx, a.Name, false); err != nil {
			return err
		}
		return m.start(ctx, d, mm)
	case api.OpUpdate:
		ev.Kind = api.EvMachineUpdated
		ev.Message = "updated live: " + strings.Join(a.Changes, ", ")
		if err := m.host.UpdateMachine(ctx, mm); err != nil {
			return err
		}
		return nil
	case api.OpRepair:
		ev.Kind = api.EvDriftFixed
		return m.host.RepairMachine(ctx, d, mm)
	case api.OpRecreate:
		ev.Kind = api.EvMachineRecreated
		return m.recreate(ctx, d, mm)
	case api.OpStop:
		ev.Kind = api.EvMachineStopped
		return m.stop(ctx, a.Name, false)
	case api.OpRemove:
		ev.Kind = api.EvMachineRemoved
		return m.host.RemoveRoot(ctx, a.Name)
	case api.OpRecord:
		if a.Exit == nil {
			return fmt.Errorf("record: no exit to record")
		}
		m.exited(ctx, a.Name, *a.Exit) // tells of it itself
		return nil
	}
	return fmt.Errorf("unknown action %s", a.Op)
}

// clearStaleHold drops a hold that a changed definition released.
func (m *Manager) clearStaleHold(mm *spec.Machine) {
	rec := m.store.Get(mm.Name)
	if rec.Hold != nil && rec.Hold.SpecHash != "" && rec.Hold.SpecHash != mm.Hash() {
		_ = m.store.Update(mm.Name, func(r *store.Record) { r.Hold = nil; r.Restarts = 0; r.NextRestart = time.Time{} })
		m.events.Emit(api.Event{Kind: api.EvMachineReleased, Machine: mm.Name, Message: "its definition changed: hold released"})
	}
}

func (m *Manager) start(ctx context.Context, d *spec.Set, mm *spec.Machine) error {
	m.events.Emit(api.Event{Kind: api.EvMachineStarting, Machine: mm.Name, Message: "starting " + mm.Name})
	if err := m.host.StartMachine(ctx, d, mm); err != nil {
		return err
	}
	_ = m.store.Update(mm.Name, func(r *store.Record) { r.LastError = ""; r.NextRestart = time.Time{} })
	m.watch(mm.Name)
	return nil
}

func (m *Manager) stop(ctx context.Context, name string, terminate bool) error {
	// The exit this stop causes is berth's own doing, not a crash for the
	// restart policy: stop watching first (an exit the watcher saw already has
	// been handled), then handle the exit here.
	m.unwatch(name)
	m.events.Emit(api.Event{Kind: api.EvMachineStopping, Machine: name, Message: "stopping " + name})
	ex, err := m.host.StopMachine(ctx, name, terminate)
	if err != nil {
		m.watch(name) // still running, as far as we know: keep supervising it
		return err
	}
	if ex != nil {
		if err := m.store.Update(name, func(r *store.Record) { r.LastExit = ex; r.Restarts = 0; r.NextRestart = time.Time{} }); err != nil {
			logctx.From(ctx).Warn("record exit", "machine", name, "err", err)
		}
		m.events.Emit(api.Event{Kind: api.EvMachineStopped, Machine: name, Message: fmt.Sprintf("%s stopped: %s", name, ex.Reason)})
		m.host.Forget(name)
	}
	return nil
}

func (m *Manager) recreate(ctx context.Context, d *spec.Set, mm *spec.Machine) error {
	if err := m.stop(ctx, mm.Name, false); err != nil {
		return err
	}
	if err := m.host.RemoveRoot(ctx, mm.Name); err != nil {
		return err
	}
	_ = m.store.Update(mm.Name, func(r *store.Record) { r.Hold = nil; r.Restarts = 0; r.NextRestart = time.Time{} })
	return m.start(ctx, d, mm)
}

// adopt starts waiting for the exit of running machines berthd is not
// watching yet: after berthd's own restart, or machines started by the CLI
// meanwhile. It only observes: machines that ended while nobody watched are in
// the plan (OpRecord).
func (m *Manager) adopt(o *plan.Observed) {
	if !m.daemon {
		return
	}
	for name, om := range o.Machines {
		if !om.Running {
			continue
		}
		m.mu.Lock()
		_, ok := m.watched[name]
		m.mu.Unlock()
		if !ok {
			m.watch(name)
			m.events.Emit(api.Event{Kind: api.EvMachineAdopted, Machine: name, Message: "found running; supervising it"})
		}
	}
}

// watcher is the goroutine waiting for one machine's exit.
type watcher struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// watch waits, in the background, for the exit of a running machine.
func (m *Manager) watch(name string) {
	if !m.daemon {
		return
	}
	m.mu.Lock()
	if _, ok := m.watched[name]; ok {
		m.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{cancel: cancel, done: make(chan struct{})}
	m.watched[name] = w
	m.mu.Unlock()
	go func() {
		defer close(w.done)
		defer func() {
			m.mu.Lock()
			if m.watched[name] == w {
				delete(m.watched, name)
			}
			m.mu.Unlock()
			cancel()
		}()
		go m.watchLive(ctx, name)
		ex, err := m.host.Wait(ctx, name)
		if ctx.Err() != nil {
			return // unwatched: whoever did it handles the exit
		}
		if err != nil {
			logctx.From(ctx).Warn("lost track of machine", "machine", name, "err", err)
			m.trigger()
			return
		}
		m.exited(ctx, name, ex)
	}()
}

// unwatch stops waiting for a machine's exit and returns once its watcher is
// gone (so an exit it saw has been handled by then).
func (m *Manager) unwatch(name string) {
	m.mu.Lock()
	w := m.watched[name]
	delete(m.watched, name)
	m.mu.Unlock()
	if w != nil {
		w.cancel()
		<-w.done
	}
}

// awaitExitHandled waits, up to limit, until the watcher of a machine that
// is no longer running has handled its exit.
func (m *Manager) awaitExitHandled(ctx context.Context, name string, limit time.Duration) {
	m.mu.Lock()
	w := m.watched[name]
	m.mu.Unlock()
	if w == nil {
		return
	}
	select {
	case <-w.done:
	case <-time.After(limit):
		logctx.From(ctx).Warn("the previous run's exit is still not handled; starting anyway", "machine", name)
	}
}

// stopWatching ends the exit watchers (berthd shutting down: machines go on).
func (m *Manager) stopWatching() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.watched {
		w.cancel()
	}
}

// exited applies the restart policy to a machine that ended (while berthd
// watched it, or while it was down: the plan's OpExited), records the outcome
// and tells of it; a restart is due at the record's NextRestart, when a pass
// starts the machine.
func (m *Manager) exited(ctx context.Context, name string, ex api.ExitInfo) {
	defer m.host.Forget(name)
	m.mu.Lock()
	d := m.desired
	m.mu.Unlock()
	var mm *spec.Machine
	if d != nil {
		mm = d.Machine(name)
	}
	var out plan.ExitOutcome
	err := m.store.Update(name, func(r *store.Record) {
		out = plan.AfterExit(name, mm, *r, ex, time.Now())
		*r = out.Record
	})
	if err != nil {
		logctx.From(ctx).Error("record the exit", "machine", name, "err", err)
	}
	m.events.Emit(api.Event{Kind: out.Event, Machine: name, Message: out.Message})
	if out.Restart {
		time.AfterFunc(time.Until(out.Record.NextRestart), m.trigger)
	}
}

// sortedMachineNames returns the names of every machine declared or observed.
func sortedMachineNames(d *spec.Set, o *plan.Observed) []string {
	seen := map[string]bool{}
	var out []string
	if d != nil {
		for _, mm := range d.Machines {
			if !seen[mm.Name] {
				seen[mm.Name] = true
				out = append(out, mm.Name)
			}
		}
	}
	for n := range o.Machines {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
