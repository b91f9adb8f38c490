package plan

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/store"
	"github.com/berthd/berth/spec"
)

// pinned is a digest a registry reference is pinned to.
const pinned = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// planBase is testdata/base.yaml: a network, an image and web on it.
var planBase = func() string {
	b, err := os.ReadFile("testdata/base.yaml")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

func mustParse(t *testing.T, y string) *spec.Set {
	t.Helper()
	s, err := spec.Parse("test.yaml", []byte(y))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return s
}

// converged is the observation of a host where everything in d runs as declared.
func converged(d *spec.Set) *Observed {
	o := &Observed{Machines: map[string]*ObservedMachine{}, Images: map[string]ObservedImage{}, Networks: map[string]ObservedNetwork{}, RulesCurrent: true}
	for _, n := range d.Networks {
		o.Networks[n.Name] = ObservedNetwork{Name: n.Name, Bridge: n.Bridge, Present: true, Correct: true}
	}
	for _, i := range d.Images {
		o.Images[i.Name] = ObservedImage{Name: i.Name, Digest: "sha256:aaa", SpecHash: i.Hash()}
	}
	for _, m := range d.Machines {
		c := *m
		o.Machines[m.Name] = &ObservedMachine{Name: m.Name, Running: m.State == spec.StateRunning, Phase: "running", Spec: &c,
			HasRoot: true, RootImage: m.Image, RootDigest: "sha256:aaa", RootStrategy: "overlay"}
	}
	return o
}

func ops(p *api.Plan) []string {
	var out []string
	for _, a := range p.Actions {
		out = append(out, a.Op+" "+a.Kind+" "+a.Name)
	}
	return out
}

func TestBuildPlan(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		defs    string // replaces planBase when set
		edit    func(d *spec.Set, o *Observed, recs map[string]store.Record)
		want    []string
		changes bool
		detail  string // a substring of some action's changes or reason
	}{
		{name: "converged host: nothing to do", want: nil},
		{name: "empty host: network, image, machine in order",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Networks, o.Images, o.Machines = map[string]ObservedNetwork{}, map[string]ObservedImage{}, map[string]*ObservedMachine{}
				o.RulesCurrent = false
			},
			want: []string{"create network lan", "build image deb", "start machine web", "update rules berth"}, changes: true},
		{name: "memory limit edited: live update, no restart",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Machines["web"].Spec.Resources.MemoryMax = spec.Size(256 << 20)
			},
			want: []string{"update machine web"}, changes: true, detail: "resources.memoryMax"},
		{name: "I/O limit and CPU set edited: live update, no restart",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Machines["web"].Spec.Resources.IO = []spec.IOLimit{{Device: "/dev/vda", WriteBandwidth: spec.Size(1 << 20)}}
				o.Machines["web"].Spec.Resources.CPUSet = "1"
			},
			want: []string{"update machine web"}, changes: true, detail: "resources.cpuset: 1 → (unset)"},
		{name: "port edited: live update of the forwards",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Machines["web"].Spec.Network.Ports = nil
			},
			want: []string{"update machine web"}, changes: true, detail: "network.ports"},
		{name: "anti-spoofing turned off: live update of the rules",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				off := false
				d.Machine("web").Network.AntiSpoofing = &off
			},
			want: []string{"update machine web"}, changes: true, detail: "network.antiSpoofing: true → false"},
		{name: "hostname edited: restart",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Machines["web"].Spec.Hostname = "old"
			},
			want: []string{"restart machine web", "update rules berth"}, changes: true, detail: "hostname: old → web"},
		{name: "made ephemeral: restart",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				d.Machine("web").Root.Ephemeral, d.Machine("web").Root.EphemeralSize = true, spec.DefaultEphemeralSize
			},
			want: []string{"restart machine web", "update rules berth"}, changes: true, detail: "root.ephemeral: false → true"},
		{name: "machine died: start",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Machines["web"].Running = false
			},
			want: []string{"start machine web", "update rules berth"}, changes: true},
		{name: "in back-off: a note, no start",
			edit: func(d *spec.Set, o *Observed, r map[string]store.Record) {
				o.Machines["web"].Running = false
				r["web"] = store.Record{Name: "web", Restarts: 2, NextRestart: now.Add(4 * time.Second)}
			},
			want: []string{"note machine web"}, detail: "restarting in 4s"},
		{name: "held by berth stop: not started",
			edit: func(d *spec.Set, o *Observed, r map[string]store.Record) {
				o.Machines["web"].Running = false
				r["web"] = store.Record{Name: "web", Hold: &api.Hold{Reason: api.HoldStopped, Message: "berth stop", SpecHash: d.Machine("web").Hash()}}
			},
			want: []string{"note machine web"}, detail: "held stopped"},
		{name: "hold released by a changed definition",
			edit: func(d *spec.Set, o *Observed, r map[string]store.Record) {
				o.Machines["web"].Running = false
				r["web"] = store.Record{Name: "web", Hold: &api.Hold{Reason: api.HoldStopped, SpecHash: "older"}}
			},
			want: []string{"start machine web", "update rules berth"}, changes: true},
		{name: "declared stopped: stop",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				d.Machine("web").State = spec.StateStopped
			},
			want: []string{"stop machine web", "update rules berth"}, changes: true},
		{name: "undeclared running machine: stopped, root kept",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Machines["old"] = &ObservedMachine{Name: "old", Running: true, HasRoot: true}
			},
			want: []string{"stop machine old", "update rules berth"}, changes: true, detail: "root is kept"},
		{name: "ephemeral, not running: started on a fresh layer, no root needed",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				d.Machine("web").Root.Ephemeral = true
				o.Machines["web"].Running, o.Machines["web"].HasRoot = false, false
			},
			want: []string{"start machine web", "update rules berth"}, changes: true, detail: "ephemeral: on a fresh throw-away layer"},
		{name: "undeclared ephemeral machine: stopped, nothing kept",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Machines["lab-3"] = &ObservedMachine{Name: "lab-3", Running: true, Spec: &spec.Machine{Name: "lab-3", Root: spec.Root{Ephemeral: true}}}
			},
			want: []string{"stop machine lab-3", "remove machine lab-3", "update rules berth"}, changes: true, detail: "nothing of it is kept"},
		{name: "ephemeral, image changed: a note, never a restart that loses its writes",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				d.Machine("web").Root.Ephemeral = true
				o.Images["deb"] = ObservedImage{Name: "deb", Digest: "sha256:bbb"}
				old := *d.Machine("web")
				old.Image = "older"
				o.Machines["web"].Spec = &old
			},
			want: []string{"note machine web"}, detail: "runs on the image it started with"},
		{name: "image changed, keep: a note, never a silent recreate",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Images["deb"] = ObservedImage{Name: "deb", Digest: "sha256:bbb", SpecHash: d.Image("deb").Hash()}
			},
			want: []string{"note machine web"}, detail: "berth recreate web"},
		{name: "image definition changed: rebuilt, machine noted",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Images["deb"] = ObservedImage{Name: "deb", Digest: "sha256:aaa", SpecHash: "old"}
			},
			want: []string{"build image deb", "note machine web"}, changes: true},
		{name: "registry image pinned: the plan shows its digest",
			defs: strings.Replace(planBase, "debootstrap: {suite: bookworm}", "registry: {ref: 'docker.io/library/debian@"+pinned+"'}", 1),
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) { delete(o.Images, "deb") },
			want: []string{"build image deb", "note machine web"}, changes: true, detail: "pull docker.io/library/debian pinned to " + pinned},
		{name: "registry image by tag: the plan recommends pinning",
			defs: strings.Replace(planBase, "debootstrap: {suite: bookworm}", "registry: {ref: 'docker.io/library/debian:bookworm'}", 1),
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) { delete(o.Images, "deb") },
			want: []string{"build image deb", "note machine web"}, changes: true, detail: "a tag, which can move to another image; pin its digest (docker.io/library/debian:bookworm@sha256:…)"},
		{name: "image changed, recreate asked: recreate",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				d.Machine("web").Root.OnImageChange = spec.ImageChangeRecreate
				o.Machines["web"].Spec.Root.OnImageChange = spec.ImageChangeRecreate
				o.Images["deb"] = ObservedImage{Name: "deb", Digest: "sha256:bbb", SpecHash: d.Image("deb").Hash()}
			},
			want: []string{"recreate machine web", "update rules berth"}, changes: true},
		{name: "bridge deleted behind berth's back: recreated",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Networks["lan"] = ObservedNetwork{Name: "lan", Present: false}
			},
			want: []string{"create network lan"}, changes: true},
		{name: "veth deleted: repaired",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Machines["web"].LinkMissing = true
			},
			want: []string{"repair machine web"}, changes: true},
		{name: "nftables table deleted: rules updated",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.RulesCurrent, o.RulesDrift = false, []string{"table bridge berth is missing"}
			},
			want: []string{"update rules berth"}, changes: true, detail: "table bridge berth is missing"},
		{name: "undeclared network: removed",
			edit: func(d *spec.Set, o *Observed, _ map[string]store.Record) {
				o.Networks["gone"] = ObservedNetwork{Name: "gone", Bridge: "br-gone", Present: true}
			},
			want: []string{"remove network gone"}, changes: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defs := planBase
			if tc.defs != "" {
				defs = tc.defs
			}
			d := mustParse(t, defs)
			o := converged(d)
			recs := map[string]store.Record{}
			if tc.edit != nil {
				tc.edit(d, o, recs)
			}
			p := Build(d, o, recs, Options{Now: now})
			got := ops(p)
			if strings.Join(got, "; ") != strings.Join(tc.want, "; ") {
				t.Fatalf("plan:\n%s\ngot  %q\nwant %q", p, got, tc.want)
			}
			if p.Changes() != tc.changes {
				t.Errorf("Changes() = %v, want %v", p.Changes(), tc.changes)
			}
			if tc.detail != "" && !strings.Contains(p.String(), tc.detail) {
				t.Errorf("plan does not mention %q:\n%s", tc.detail, p)
			}
		})
	}
}

func TestPlanPrune(t *testing.T) {
	d := mustParse(t, planBase)
	o := converged(d)
	o.Machines["old"] = &ObservedMachine{Name: "old", HasRoot: true}
	if p := Build(d, o, nil, Options{}); p.Changes() {
		t.Fatalf("an undeclared stopped root must be left alone without prune:\n%s", p)
	}
	p := Build(d, o, nil, Options{Prune: true})
	if got := strings.Join(ops(p), "; "); got != "remove machine old" {
		t.Fatalf("prune plan = %q", got)
	}
}

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		base, max time.Duration
		n         int
		want      time.Duration
	}{
		{0, 0, 0, time.Second},
		{time.Second, time.Minute, 3, 8 * time.Second},
		{time.Second, 10 * time.Second, 10, 10 * time.Second},
		{2 * time.Second, 0, 1, 4 * time.Second},
	} {
		if got := backoff(tc.base, tc.max, tc.n); got != tc.want {
			t.Errorf("backoff(%s, %s, %d) = %s, want %s", tc.base, tc.max, tc.n, got, tc.want)
		}
	}
}

func TestDiffJSON(t *testing.T) {
	a := spec.Resources{MemoryMax: spec.Size(512 << 20), PidsMax: 100}
	b := spec.Resources{MemoryMax: spec.Size(1 << 30), PidsMax: 100}
	got := diffJSON("resources", a, b)
	if len(got) != 1 || !strings.HasPrefix(got[0], "resources.memoryMax: ") {
		t.Fatalf("diff = %q", got)
	}
	if d := diffJSON("x", a, a); d != nil {
		t.Fatalf("equal values differ: %q", d)
	}
	// false is shown as a value, not as unset.
	if d := diffJSON("network.antiSpoofing", true, false); len(d) != 1 || d[0] != "network.antiSpoofing: true → false" {
		t.Fatalf("bool diff = %q", d)
	}
}

// TestPlanNeeds: every action says what it needs first, so apply's order is
// in the plan: the machine after its image and network, the rules after the
// machine, and nothing hidden (the rules update is an action of its own).
func TestPlanNeeds(t *testing.T) {
	d := mustParse(t, planBase)
	o := &Observed{Machines: map[string]*ObservedMachine{}, Images: map[string]ObservedImage{}, Networks: map[string]ObservedNetwork{}}
	p := Build(d, o, nil, Options{})
	needs := map[string][]string{}
	for _, a := range p.Actions {
		needs[a.ID()] = append(append([]string{}, a.Needs...), a.After...)
	}
	for id, want := range map[string][]string{
		"create network lan": nil,
		"build image deb":    nil,
		"start machine web":  {"build image deb", "create network lan"},
		"update rules berth": {"create network lan", "start machine web"},
	} {
		got := append([]string{}, needs[id]...)
		slices.Sort(got)
		if strings.Join(got, ", ") != strings.Join(want, ", ") {
			t.Errorf("%s needs %q, want %q", id, got, want)
		}
	}
}

// TestPlanExitWhileDown: an exit berthd did not see is an action of the plan
// (the restart policy decides as the plan is made), not something done while
// observing.
func TestPlanExitWhileDown(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		policy string
		code   int
		want   []string
		detail string
	}{
		{"on-failure", 1, []string{"record machine web", "note machine web"}, "restarting in 1s"},
		{"no", 1, []string{"record machine web", "note machine web"}, "restart policy says stay down"},
		{"always", 0, []string{"record machine web", "note machine web"}, "restarting in 1s"},
	} {
		d := mustParse(t, planBase+"restart: {policy: "+tc.policy+"}\n")
		o := converged(d)
		o.Machines["web"].Running = false
		o.Machines["web"].Exited = &api.ExitInfo{Code: tc.code, Reason: "exited", Time: now, Started: now.Add(-time.Second)}
		recs := map[string]store.Record{}
		p := Build(d, o, recs, Options{Now: now})
		if got := ops(p); strings.Join(got, "; ") != strings.Join(tc.want, "; ") || !strings.Contains(p.String(), tc.detail) {
			t.Errorf("policy %s, exit %d: plan\n%s\nwant %q mentioning %q", tc.policy, tc.code, p, tc.want, tc.detail)
		}
		if len(recs) != 0 {
			t.Errorf("Build changed the records it was given: %v", recs)
		}
	}
}
