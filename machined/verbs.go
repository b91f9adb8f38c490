package machined

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/plan"
	"github.com/berthd/berth/machined/sources"
	"github.com/berthd/berth/machined/store"
	"github.com/berthd/berth/spec"
)

// Version is berth's version, set at build time.
var Version = "dev"

var _ api.API = (*Manager)(nil)

// current returns the definitions in force, loading them when none were loaded
// yet (the CLI's one-shot manager).
func (m *Manager) current(ctx context.Context) (*spec.Set, []string) {
	m.mu.Lock()
	d, errs := m.desired, m.defErrs
	m.mu.Unlock()
	if d != nil {
		return d, errs
	}
	d, errs = m.loadDesired(ctx, nil)
	if d == nil {
		d = &spec.Set{}
	}
	return d, errs
}

// List returns every machine that is declared, running, or has a root.
func (m *Manager) List(ctx context.Context) ([]api.MachineStatus, error) {
	d, _ := m.current(ctx)
	o, err := m.host.Observe(ctx, d)
	if err != nil {
		return nil, err
	}
	recs := m.records()
	var out []api.MachineStatus
	for _, name := range sortedMachineNames(d, o) {
		out = append(out, m.status(d, o, recs, name))
	}
	return out, nil
}

// Status returns one machine with its details: limits and usage, recent console
// lines and events.
func (m *Manager) Status(ctx context.Context, name string) (*api.MachineStatus, error) {
	d, _ := m.current(ctx)
	o, err := m.host.Observe(ctx, d)
	if err != nil {
		return nil, err
	}
	if d.Machine(name) == nil && o.Machines[name] == nil {
		return nil, fmt.Errorf("machine %q: %w (not declared, not running, no root)", name, errdefs.ErrNotFound)
	}
	st := m.status(d, o, m.records(), name)
	if om := o.Machines[name]; om != nil && om.Running && om.Spec != nil {
		st.Limits = limitsMap(om.Spec.Resources)
	}
	m.host.Describe(ctx, &st)
	st.Events = m.events.Recent(0, name, 10)
	return &st, nil
}

// status derives a machine's state from its definition, what runs, and its record.
func (m *Manager) status(d *spec.Set, o *plan.Observed, recs map[string]store.Record, name string) api.MachineStatus {
	st := api.MachineStatus{Name: name, State: api.StateStopped}
	om := o.Machines[name]
	rec := recs[name]
	mm := d.Machine(name)
	if mm != nil {
		st.Declared = true
		st.Desired = string(mm.State)
		st.Image = mm.Image
		st.Network = mm.Network.Name
		st.Source = fmt.Sprintf("%s:%d", mm.Source.File, mm.Source.Line)
		for _, p := range mm.Network.Ports {
			st.Ports = append(st.Ports, portString(p))
		}
	}
	st.Hold = rec.Hold
	st.LastExit = rec.LastExit
	st.Restarts = rec.Restarts
	st.LastError = rec.LastError
	if om != nil {
		st.Root = om.RootPath
		if om.Running {
			st.Since, st.ReadySince = om.Since, om.ReadySince
			st.SupervisorPID, st.LeaderPID = om.SupervisorPID, om.LeaderPID
			st.Cgroup, st.Driver, st.Addresses = om.Cgroup, om.Driver, om.Addresses
			st.Seccomp, st.DeviceFence = om.Seccomp, om.DeviceFence
			st.Health, st.NotifyStatus = om.Health, om.NotifyStatus
		}
		st.Users = om.Users
		if om.RootImage != "" && st.Image == "" {
			st.Image = om.RootImage
		}
		st.ImageDigest, st.ImageRef = om.RootDigest, om.RootRef
		st.RootStrategy = om.RootStrategy
		if om.Running {
			switch om.Phase {
			case "running":
				st.State = api.StateRunning
			case "stopping":
				st.State = api.StateStopping
			default:
				st.State = api.StateBooting
			}
		}
	}
	if st.State == api.StateStopped && ((rec.Hold != nil && rec.Hold.Reason == api.HoldFailed) || (rec.LastError != "" && mm != nil && mm.State == spec.StateRunning && rec.Hold == nil)) {
		st.State = api.StateFailed
	}
	if mm != nil && mm.State == spec.StateRunning && st.State == api.StateStopped && rec.Hold == nil && !rec.NextRestart.IsZero() {
		st.Notes = append(st.Notes, fmt.Sprintf("restart %d due %s", rec.Restarts, rec.NextRestart.Format(time.TimeOnly)))
	}
	if rec.Hold != nil {
		st.Notes = append(st.Notes, rec.Hold.Note())
	}
	if mm == nil && om != nil {
		st.Notes = append(st.Notes, "not declared")
	}
	if mm != nil && om != nil && om.HasRoot {
		if oi, ok := o.Images[mm.Image]; ok && oi.Digest != om.RootDigest {
			st.Notes = append(st.Notes, "needs recreate: image "+mm.Image+" changed (berth recreate "+name+")")
		}
	}
	return st
}

func portString(p spec.Port) string {
	host := ""
	if p.HostAddress.IsValid() {
		host = p.HostAddress.String() + ":"
		if p.HostAddress.Is6() {
			host = "[" + p.HostAddress.String() + "]:"
		}
	}
	return fmt.Sprintf("%s%d→%d/%s", host, p.HostPort, p.MachinePort, p.Protocol)
}

// Verb runs an imperative verb on one machine (see Verbs).
func (m *Manager) Verb(ctx context.Context, name, verb string) error {
	return m.verbs(ctx, verb, []string{name})[0]
}

// Verbs runs one imperative verb on many machines together: one look at the
// host for all of them, and every machine's action in flight at once — stops
// unbounded, starts through the gate, as a reconcile pass — so berth stop of
// 20 machines takes about one stop, not 20. Each machine's error is its own.
func (m *Manager) Verbs(ctx context.Context, req api.VerbRequest) ([]api.VerbOutcome, error) {
	if len(req.Names) == 0 {
		return nil, fmt.Errorf("berth %s: name at least one machine: %w", req.Verb, errdefs.ErrInvalid)
	}
	errs := m.verbs(ctx, req.Verb, req.Names)
	out := make([]api.VerbOutcome, len(req.Names))
	for i, name := range req.Names {
		out[i] = api.VerbOutcome{Machine: name}
		if errs[i] != nil {
			out[i].Error = errs[i].Error()
		}
	}
	return out, nil
}

// verbs is Verbs with an error (or nil) per name, in names' order. Verbs that
// stop a machine put it on hold, so the next reconcile does not undo them;
// start and release lift the hold.
func (m *Manager) verbs(ctx context.Context, verb string, names []string) []error {
	errs := make([]error, len(names))
	switch verb {
	case "start", "stop", "poweroff", "terminate", "reboot", "release", "recreate", "remove":
	default:
		for i := range errs {
			errs[i] = fmt.Errorf("unknown verb %q: %w", verb, errdefs.ErrInvalid)
		}
		return errs
	}
	d, _ := m.current(ctx)
	o, err := m.host.Observe(ctx, d)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	var known []int // indexes of the names that are machines
	for i, name := range names {
		if d.Machine(name) == nil && o.Machines[name] == nil {
			errs[i] = fmt.Errorf("machine %q: %w: it is not declared in any definition and has no root", name, errdefs.ErrNotFound)
			continue
		}
		known = append(known, i)
	}
	running := func(name string) bool { om := o.Machines[name]; return om != nil && om.Running }
	if verb == "start" {
		m.verbStart(ctx, d, names, known, running, errs)
		return errs
	}
	var wg sync.WaitGroup
	for _, i := range known {
		name, mm := names[i], d.Machine(names[i])
		one := func() error {
			switch verb {
			case "stop", "poweroff", "terminate":
				return m.verbStop(ctx, name, verb, mm, running(name))
			case "reboot":
				if !running(name) {
					return fmt.Errorf("machine %q is not running: %w", name, errdefs.ErrConflict)
				}
				return m.host.Reboot(ctx, name)
			case "release":
				return m.verbRelease(ctx, name)
			case "recreate":
				return m.verbRecreate(ctx, d, name, mm)
			default: // remove
				return m.verbRemove(ctx, name, mm, running(name))
			}
		}
		if verb == "release" || verb == "recreate" {
			// Each takes or triggers a reconcile pass: one after the other.
			errs[i] = one()
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = one() }()
	}
	wg.Wait()
	return errs
}

// verbStart is berth start: lift the holds and start the declared machines
// now, together, through the gate, under one pass lock (so no reconcile
// starts one of them at the same moment). Already running is success.
func (m *Manager) verbStart(ctx context.Context, d *spec.Set, names []string, known []int, running func(string) bool, errs []error) {
	var todo []int
	for _, i := range known {
		name, mm := names[i], d.Machine(names[i])
		switch {
		case mm == nil:
			errs[i] = fmt.Errorf("machine %q is not declared: add a definition for it and run berth apply: %w", name, errdefs.ErrInvalid)
		case mm.State == spec.StateStopped:
			errs[i] = fmt.Errorf("machine %q is declared state: stopped (%s:%d); change the definition to start it: %w", name, mm.Source.File, mm.Source.Line, errdefs.ErrConflict)
		default:
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return
	}
	m.pass.Lock()
	defer m.pass.Unlock()
	each := func(fn func(i int)) {
		var wg sync.WaitGroup
		for _, i := range todo {
			if errs[i] == nil {
				wg.Add(1)
				go func() { defer wg.Done(); fn(i) }()
			}
		}
		wg.Wait()
	}
	each(func(i int) {
		if !running(names[i]) {
			// The end of its previous run may still be being handled (its
			// supervisor is tidying up): let that land first, or its hold
			// would come after this start. (A running machine's watcher
			// never ends: no waiting for it.)
			m.awaitExitHandled(ctx, names[i], 30*time.Second)
		}
		if err := m.store.Update(names[i], func(r *store.Record) { r.Hold = nil; r.Restarts = 0; r.NextRestart = time.Time{}; r.LastError = "" }); err != nil {
			errs[i] = fmt.Errorf("machine %q: lift its hold: %w", names[i], err)
		}
	})
	o, err := m.host.Observe(ctx, d)
	if err != nil {
		for _, i := range todo {
			errs[i] = err
		}
		return
	}
	each(func(i int) {
		if om := o.Machines[names[i]]; om != nil && om.Running {
			return // already running is success
		}
		if errs[i] = m.gate.acquire(ctx); errs[i] != nil {
			return
		}
		defer m.gate.release()
		m.events.Emit(api.Event{Kind: api.EvMachineReleased, Machine: names[i], Message: "berth start"})
		errs[i] = m.start(ctx, d, d.Machine(names[i]))
	})
}

// verbStop is berth stop, poweroff and terminate: hold a declared machine
// stopped (on disk first: without the hold the next reconcile would start it
// again, so no hold, no stop), then stop it.
func (m *Manager) verbStop(ctx context.Context, name, verb string, mm *spec.Machine, running bool) error {
	if mm != nil {
		hash := mm.Hash()
		if err := m.store.Update(name, func(r *store.Record) {
			r.Hold = &api.Hold{Reason: api.HoldStopped, Message: "berth " + verb, Since: time.Now(), SpecHash: hash}
			r.NextRestart = time.Time{}
		}); err != nil {
			return fmt.Errorf("machine %q: record the hold (it keeps running): %w", name, err)
		}
		m.events.Emit(api.Event{Kind: api.EvMachineHeld, Machine: name, Message: "held stopped by berth " + verb})
	}
	if !running {
		return nil
	}
	return m.stop(ctx, name, verb == "terminate")
}

// verbRelease is berth release: lift the hold and let the reconciler decide.
func (m *Manager) verbRelease(ctx context.Context, name string) error {
	if err := m.store.Update(name, func(r *store.Record) { r.Hold = nil; r.Restarts = 0; r.NextRestart = time.Time{} }); err != nil {
		return fmt.Errorf("machine %q: lift its hold: %w", name, err)
	}
	m.events.Emit(api.Event{Kind: api.EvMachineReleased, Machine: name, Message: "berth release"})
	m.trigger()
	if !m.daemon {
		_, err := m.reconcile(ctx, false)
		return err
	}
	return nil
}

// verbRecreate is berth recreate: a new root from the machine's image.
func (m *Manager) verbRecreate(ctx context.Context, d *spec.Set, name string, mm *spec.Machine) error {
	if mm == nil {
		return fmt.Errorf("machine %q is not declared; berth recreate needs its definition: %w", name, errdefs.ErrInvalid)
	}
	m.pass.Lock()
	defer m.pass.Unlock()
	if err := m.recreate(ctx, d, mm); err != nil {
		return err
	}
	m.events.Emit(api.Event{Kind: api.EvMachineRecreated, Machine: name, Message: "root made anew from image " + mm.Image})
	return nil
}

// verbRemove is berth remove: delete the root of a machine no longer declared.
func (m *Manager) verbRemove(ctx context.Context, name string, mm *spec.Machine, running bool) error {
	if mm != nil {
		return fmt.Errorf("machine %q is still declared (%s:%d): delete its definition and apply first: %w", name, mm.Source.File, mm.Source.Line, errdefs.ErrConflict)
	}
	if running {
		return fmt.Errorf("machine %q is running: stop it first (berth stop %s): %w", name, name, errdefs.ErrConflict)
	}
	if err := m.host.RemoveRoot(ctx, name); err != nil {
		return err
	}
	_ = m.store.Update(name, func(r *store.Record) { *r = store.Record{Name: name} })
	m.events.Emit(api.Event{Kind: api.EvMachineRemoved, Machine: name, Message: "root deleted (berth remove)"})
	return nil
}

// Kill sends a signal to a running machine's leader or to all its processes.
func (m *Manager) Kill(ctx context.Context, name string, req api.KillRequest) error {
	return m.host.Signal(ctx, name, req)
}

// Plan reports what apply would do, changing nothing.
func (m *Manager) Plan(ctx context.Context, req api.PlanRequest) (*api.Plan, error) {
	var extra *sources.Snapshot
	if req.Path != "" {
		sn, err := sources.ReadSnapshot(req.Path)
		if err != nil {
			return nil, err
		}
		if !m.sources.IsWatchedDir(sn.Path) {
			extra = sn
		}
	}
	d, errs := m.loadDesired(ctx, extra)
	if extra == nil && errs != nil {
		// loadDesired kept the last good set; a plan shows the errors.
		return &api.Plan{Errors: errs}, nil
	}
	if len(errs) > 0 {
		return &api.Plan{Errors: errs}, nil
	}
	o, err := m.host.Observe(ctx, d)
	if err != nil {
		return nil, err
	}
	return plan.Build(d, o, m.records(), plan.Options{Prune: req.Prune}), nil
}

// Apply takes the definitions under req.Path (kept as an applied source), or
// the current sources, and reconciles the host to them now.
func (m *Manager) Apply(ctx context.Context, req api.ApplyRequest) (*api.ApplyResult, error) {
	if req.Path != "" {
		abs, err := filepath.Abs(req.Path)
		if err != nil {
			return nil, err
		}
		switch {
		case req.Forget:
			ok, err := m.sources.ForgetSnapshot(abs)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("%s was never applied: %w", abs, errdefs.ErrNotFound)
			}
			m.events.Emit(api.Event{Kind: api.EvSourceUpdated, Message: "forgot definitions applied from " + abs})
		case m.sources.IsWatchedDir(abs):
			// berthd watches it already: a reconcile is all apply means.
		default:
			sn, err := sources.ReadSnapshot(abs)
			if err != nil {
				return nil, err
			}
			if _, errs := m.loadDesired(ctx, sn); len(errs) > 0 {
				return &api.ApplyResult{Plan: &api.Plan{Errors: errs}}, fmt.Errorf("definitions have errors; nothing applied: %w", errdefs.ErrInvalid)
			}
			if err := m.sources.SaveSnapshot(*sn); err != nil {
				return nil, fmt.Errorf("keep applied definitions: %w", err)
			}
			m.events.Emit(api.Event{Kind: api.EvSourceUpdated, Message: fmt.Sprintf("applied %d files from %s", len(sn.Files), abs)})
		}
	}
	res, err := m.reconcile(ctx, req.Prune)
	if err != nil && res != nil && len(res.Plan.Errors) > 0 {
		return res, fmt.Errorf("%w: %v", errdefs.ErrInvalid, err)
	}
	return res, err
}

// Networks lists the declared networks and what the host has of them.
func (m *Manager) Networks(ctx context.Context) ([]api.NetworkStatus, error) {
	d, _ := m.current(ctx)
	return m.host.NetworkStatus(ctx, d), nil
}

// Daemon describes the daemon (or the one-shot manager).
func (m *Manager) Daemon(ctx context.Context) (*api.DaemonStatus, error) {
	_, errs := m.current(ctx)
	m.mu.Lock()
	last := m.lastRun
	m.mu.Unlock()
	return &api.DaemonStatus{
		Daemon:        m.daemon,
		PID:           os.Getpid(),
		StateDir:      m.cfg.StateDir,
		Version:       Version,
		Started:       m.started,
		Driver:        m.host.DriverName(),
		Sources:       m.sources.Infos(),
		LastReconcile: last,
		Errors:        errs,
	}, nil
}

// Events replays the log after seq and, when follow, streams new events.
func (m *Manager) Events(ctx context.Context, seq uint64, machine string, follow bool, fn func(api.Event) error) error {
	var ch <-chan api.Event
	var cancel func()
	if follow {
		ch, cancel = m.events.Subscribe()
		defer cancel()
	}
	last := seq
	for _, e := range m.events.Recent(seq, machine, 0) {
		if err := fn(e); err != nil {
			return err
		}
		last = e.Seq
	}
	if !follow {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-ch:
			if !ok {
				return nil
			}
			if e.Seq <= last || (machine != "" && e.Machine != machine) {
				continue
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}

// limitsMap is a machine's declared limits as berth status shows them.
func limitsMap(r spec.Resources) map[string]any {
	m := map[string]any{}
	if r.MemoryMax > 0 {
		m["memoryMax"] = r.MemoryMax.String()
	}
	if r.MemoryHigh > 0 {
		m["memoryHigh"] = r.MemoryHigh.String()
	}
	if r.CPUs > 0 {
		m["cpus"] = r.CPUs
	}
	if r.CPUWeight > 0 {
		m["cpuWeight"] = r.CPUWeight
	}
	if r.PidsMax > 0 {
		m["pidsMax"] = r.PidsMax
	}
	if r.IOWeight > 0 {
		m["ioWeight"] = r.IOWeight
	}
	if len(r.IO) > 0 {
		m["io"] = r.IO
	}
	if r.CPUSet != "" {
		m["cpuset"] = r.CPUSet
	}
	return m
}
