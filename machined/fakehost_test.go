package machined

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/machined/plan"
	"github.com/berthd/berth/spec"
)

// fakeHost is an in-memory Host: networks, images and machines as maps, every
// side effect recorded in order, failures injected by name. It drives the
// reconciler's unprivileged tests (apply ordering, failure isolation,
// back-off, holds) without a kernel.
type fakeHost struct {
	mu       sync.Mutex
	networks map[string]bool
	images   map[string]string // name → the definition hash it was built from
	machines map[string]*fakeMachine
	rules    bool
	calls    []string
	fail     map[string]error // "start web", "build deb": fail that call
	exits    map[string]chan api.ExitInfo
	// stopDelay is how long a stop takes; stopping and mostStopping count
	// the stops in flight now and at most.
	stopDelay              time.Duration
	stopping, mostStopping int
}

type fakeMachine struct {
	running bool
	spec    *spec.Machine
	root    bool
}

func newFakeHost() *fakeHost {
	return &fakeHost{networks: map[string]bool{}, images: map[string]string{}, machines: map[string]*fakeMachine{},
		fail: map[string]error{}, exits: map[string]chan api.ExitInfo{}}
}

func (f *fakeHost) call(what string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, what)
	return f.fail[what]
}

func (f *fakeHost) callsSince(n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string{}, f.calls[n:]...)
}

func (f *fakeHost) Observe(ctx context.Context, d *spec.Set) (*plan.Observed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := &plan.Observed{Machines: map[string]*plan.ObservedMachine{}, Images: map[string]plan.ObservedImage{}, Networks: map[string]plan.ObservedNetwork{}, RulesCurrent: f.rules}
	for n := range f.networks {
		o.Networks[n] = plan.ObservedNetwork{Name: n, Bridge: "br-" + n, Present: true, Correct: true}
	}
	for n, h := range f.images {
		o.Images[n] = plan.ObservedImage{Name: n, Digest: "sha256:" + h, SpecHash: h}
	}
	for n, m := range f.machines {
		om := &plan.ObservedMachine{Name: n, Running: m.running, Phase: "running", Spec: m.spec, HasRoot: m.root}
		if m.spec != nil && m.root {
			om.RootImage, om.RootDigest = m.spec.Image, "sha256:"+f.images[m.spec.Image]
		}
		o.Machines[n] = om
	}
	return o, nil
}

func (f *fakeHost) EnsureNetwork(ctx context.Context, n *spec.Network) error {
	if err := f.call("network " + n.Name); err != nil {
		return err
	}
	f.mu.Lock()
	f.networks[n.Name] = true
	f.mu.Unlock()
	return nil
}

func (f *fakeHost) RemoveNetwork(ctx context.Context, name string) error {
	if err := f.call("remove network " + name); err != nil {
		return err
	}
	f.mu.Lock()
	delete(f.networks, name)
	f.mu.Unlock()
	return nil
}

func (f *fakeHost) BuildImage(ctx context.Context, img *spec.Image) error {
	if err := f.call("build " + img.Name); err != nil {
		return err
	}
	f.mu.Lock()
	f.images[img.Name] = img.Hash()
	f.mu.Unlock()
	return nil
}

func (f *fakeHost) StartMachine(ctx context.Context, d *spec.Set, m *spec.Machine) error {
	if err := f.call("start " + m.Name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.images[m.Image]; !ok {
		return fmt.Errorf("machine %q: image %q is not in the store: %w", m.Name, m.Image, errdefs.ErrNotFound)
	}
	c := *m
	f.machines[m.Name] = &fakeMachine{running: true, spec: &c, root: true}
	f.exits[m.Name] = make(chan api.ExitInfo, 1)
	return nil
}

func (f *fakeHost) StopMachine(ctx context.Context, name string, terminate bool) (*api.ExitInfo, error) {
	if err := f.call("stop " + name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.stopping++
	f.mostStopping = max(f.mostStopping, f.stopping)
	f.mu.Unlock()
	time.Sleep(f.stopDelay)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopping--
	m := f.machines[name]
	if m == nil || !m.running {
		return nil, nil
	}
	m.running = false
	return &api.ExitInfo{Code: 0, Reason: "poweroff", Time: time.Now()}, nil
}

func (f *fakeHost) Forget(name string) {}

func (f *fakeHost) UpdateMachine(ctx context.Context, m *spec.Machine) error {
	if err := f.call("update " + m.Name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := *m
	f.machines[m.Name].spec = &c
	return nil
}

func (f *fakeHost) RepairMachine(ctx context.Context, d *spec.Set, m *spec.Machine) error {
	return f.call("repair " + m.Name)
}

func (f *fakeHost) RemoveRoot(ctx context.Context, name string) error {
	if err := f.call("remove " + name); err != nil {
		return err
	}
	f.mu.Lock()
	delete(f.machines, name)
	f.mu.Unlock()
	return nil
}

func (f *fakeHost) ApplyRules(ctx context.Context, d *spec.Set) error {
	if err := f.call("rules"); err != nil {
		return err
	}
	f.mu.Lock()
	f.rules = true
	f.mu.Unlock()
	return nil
}

// Wait returns when the test ends the machine with crash.
func (f *fakeHost) Wait(ctx context.Context, name string) (api.ExitInfo, error) {
	f.mu.Lock()
	ch := f.exits[name]
	f.mu.Unlock()
	if ch == nil {
		return api.ExitInfo{}, errors.New("not running")
	}
	select {
	case ex := <-ch:
		return ex, nil
	case <-ctx.Done():
		return api.ExitInfo{}, ctx.Err()
	}
}

// crash ends a running machine as if it had died by itself.
func (f *fakeHost) crash(name string, ex api.ExitInfo) {
	f.mu.Lock()
	f.machines[name].running = false
	ch := f.exits[name]
	f.mu.Unlock()
	ch <- ex
}

func (f *fakeHost) Signal(ctx context.Context, name string, req api.KillRequest) error { return nil }
func (f *fakeHost) Reboot(ctx context.Context, name string) error                      { return nil }
func (f *fakeHost) Describe(ctx context.Context, st *api.MachineStatus)                {}
func (f *fakeHost) NetworkStatus(ctx context.Context, d *spec.Set) []api.NetworkStatus { return nil }
func (f *fakeHost) DriverName() string                                                 { return "fake" }

// fakeEnv is a Manager over a fakeHost with definitions in a directory.
type fakeEnv struct {
	t    *testing.T
	host *fakeHost
	m    *Manager
	defs string
}

func newFakeEnv(t *testing.T, daemon bool) *fakeEnv {
	dir := t.TempDir()
	e := &fakeEnv{t: t, host: newFakeHost(), defs: filepath.Join(dir, "defs")}
	if err := os.MkdirAll(e.defs, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{StateDir: filepath.Join(dir, "state"), RuntimeDir: filepath.Join(dir, "run"), LogDir: filepath.Join(dir, "log"), Parallelism: 4}
	m, err := newManager(cfg, e.host, daemon)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.stopWatching)
	e.m = m
	return e
}

func (e *fakeEnv) write(files map[string]string) {
	e.t.Helper()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(e.defs, name), []byte(body), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *fakeEnv) apply() *api.ApplyResult {
	e.t.Helper()
	res, err := e.m.Apply(context.Background(), api.ApplyRequest{Path: e.defs})
	if err != nil && res == nil {
		e.t.Fatal(err)
	}
	return res
}

const fakeDefs = `apiVersion: berth/v1
kind: Network
name: lan
subnet: 10.87.0.0/24
---
apiVersion: berth/v1
kind: Image
name: good
directory: /srv/good
---
apiVersion: berth/v1
kind: Image
name: bad
directory: /srv/bad
`

func fakeMachineDef(name, image, extra string) string {
	return "apiVersion: berth/v1\nkind: Machine\nname: " + name + "\nimage: " + image + "\nnetwork: lan\n" + extra
}

// TestApplyOrderAndIsolation: apply follows the plan's needs (network and
// image before the machine, the rules after the machines), and a failing
// image fails only the machines that need it, naming it; the others start.
func TestApplyOrderAndIsolation(t *testing.T) {
	e := newFakeEnv(t, false)
	e.host.fail["build bad"] = errors.New("debootstrap failed")
	e.write(map[string]string{"d.yaml": fakeDefs, "a.yaml": fakeMachineDef("a", "good", ""), "b.yaml": fakeMachineDef("b", "bad", "")})
	res := e.apply()
	calls := e.host.callsSince(0)
	at := func(c string) int { return slices.Index(calls, c) }
	for _, order := range [][2]string{{"network lan", "start a"}, {"build good", "start a"}, {"start a", "rules"}} {
		if at(order[0]) < 0 || at(order[1]) < 0 || at(order[0]) > at(order[1]) {
			t.Errorf("%q should come before %q: calls %q", order[0], order[1], calls)
		}
	}
	if at("start b") >= 0 {
		t.Errorf("b was started although its image failed: %q", calls)
	}
	var bErr string
	for _, r := range res.Results {
		if r.Action.ID() == "start machine b" {
			bErr = r.Error
		}
		if r.Action.ID() == "start machine a" && r.Error != "" {
			t.Errorf("a failed: %s", r.Error)
		}
	}
	if !strings.Contains(bErr, "build image bad failed") || !strings.Contains(bErr, "debootstrap failed") {
		t.Errorf("b's error does not name the failed image build: %q", bErr)
	}
	// The next pass tries the bad image again, not the running machine.
	delete(e.host.fail, "build bad")
	n := len(e.host.callsSince(0))
	e.apply()
	if got := e.host.callsSince(n); !slices.Contains(got, "build bad") || !slices.Contains(got, "start b") || slices.Contains(got, "start a") {
		t.Errorf("second pass: %q", got)
	}
}

// TestApplyBackoffAndHolds: a machine that crashes is restarted after its
// back-off, not before; one stopped with berth stop is held until berth start.
func TestApplyBackoffAndHolds(t *testing.T) {
	e := newFakeEnv(t, true)
	e.write(map[string]string{"d.yaml": fakeDefs, "a.yaml": fakeMachineDef("a", "good", "restart: {backoff: 1h}\n")})
	e.apply()
	e.host.crash("a", api.ExitInfo{Code: 139, Reason: "crashed", Time: time.Now(), Started: time.Now()})
	waitFor(t, func() bool { return e.m.store.Get("a").Restarts == 1 }, "the crash to be recorded")
	n := len(e.host.callsSince(0))
	p, err := e.m.Plan(context.Background(), api.PlanRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.String(), "restarting in 1h0m0s") {
		t.Errorf("plan during the back-off:\n%s", p)
	}
	e.apply()
	if got := e.host.callsSince(n); slices.Contains(got, "start a") {
		t.Errorf("started during its back-off: %q", got)
	}
	// berth start ends the back-off; berth stop holds it.
	if err := e.m.Verb(context.Background(), "a", "start"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Verb(context.Background(), "a", "stop"); err != nil {
		t.Fatal(err)
	}
	n = len(e.host.callsSince(0))
	e.apply()
	if got := e.host.callsSince(n); slices.Contains(got, "start a") {
		t.Errorf("a held machine was started: %q", got)
	}
	if err := e.m.Verb(context.Background(), "a", "release"); err != nil {
		t.Fatal(err)
	}
	e.apply() // the pass the release asks berthd for
	if got := e.host.callsSince(n); !slices.Contains(got, "start a") {
		t.Errorf("the released machine did not start: %q", got)
	}
}

// waitFor polls cond until it holds or five seconds pass.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
