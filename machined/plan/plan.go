// Package plan turns definitions and what was observed on the host into a
// Plan: every action berth will take, with what each needs and follows, as
// data that `berth plan` prints and the reconciler applies. The restart policy
// is here too, as pure functions of a machine's record and how it ended.
package plan

import (
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/store"
	"github.com/berthd/berth/spec"
)

// Observed is the host as one reconcile pass sees it. observe() fills it from the
// supervisors' state files, the image store, the machine roots, the links and the
// nftables table; the planner only reads it.
type Observed struct {
	Machines map[string]*ObservedMachine
	Images   map[string]ObservedImage
	Networks map[string]ObservedNetwork
	// RulesCurrent is whether berth's nftables tables hold exactly the rules
	// the desired state needs (computed by observe against the desired
	// ruleset); RulesDrift says how they differ when they do.
	RulesCurrent bool
	RulesDrift   []string
}

// ObservedMachine is what the host holds of one machine.
type ObservedMachine struct {
	Name    string
	Running bool   // a live supervisor
	Phase   string // its phase (booting, running, stopping)
	// Exited is set when the machine ended and nobody has handled its exit yet
	// (berthd was not running then).
	Exited *api.ExitInfo
	// Spec is the definition the running machine was started with (its defaulted
	// form, kept in its runtime directory); nil when unknown.
	Spec *spec.Machine
	// LinkMissing is set when the machine is attached to a network but its host
	// veth is gone (deleted behind berth's back).
	LinkMissing bool
	// What berth status shows of a running machine, read once by observe.
	Since, ReadySince        time.Time
	SupervisorPID, LeaderPID int
	Cgroup, Driver           string
	Seccomp, DeviceFence     string
	// Users is the machine's range of host IDs: the running machine's, or
	// the one recorded for it while it is stopped.
	Users     *api.Users
	Addresses []string
	RootPath  string
	// Health and NotifyStatus: the running machine's last health check and
	// sd_notify STATUS=.
	Health       *api.Health
	NotifyStatus string

	HasRoot      bool
	RootImage    string
	RootDigest   string
	RootRef      string // the OCI reference the root's image was pulled from
	RootStrategy string
}

// ObservedImage is an image in the store.
type ObservedImage struct {
	Name     string
	Digest   string
	SpecHash string // hash of the Image definition it was built from ("" when imported by hand)
}

// ObservedNetwork is a network berth made (or should make) on the host.
type ObservedNetwork struct {
	Name    string
	Bridge  string
	Present bool     // the bridge exists
	Correct bool     // with the declared addresses, up
	Drift   []string // how it differs, when it does
}

// Options tune a plan.
type Options struct {
	// Prune removes the roots of machines that are no longer declared (their data!).
	Prune bool
	Now   time.Time
}

// Build is the heart of the reconciler: the actions that take the
// observed host to the desired definitions, each with the actions it needs
// first. It is a pure function: everything berth will do is in the plan,
// `berth plan` shows it, and apply does exactly it.
func Build(d *spec.Set, o *Observed, records map[string]store.Record, opt Options) *api.Plan {
	b := &planner{d: d, o: o, records: maps.Clone(records), now: opt.Now}
	if b.records == nil {
		b.records = map[string]store.Record{}
	}
	if b.now.IsZero() {
		b.now = time.Now()
	}
	b.networks()
	b.images()
	b.exits()
	for _, m := range d.Machines {
		b.machine(m)
	}
	b.undeclared(opt.Prune)
	b.rules()
	b.removedNetworks()
	return &b.plan
}

// planner builds one plan.
type planner struct {
	d       *spec.Set
	o       *Observed
	records map[string]store.Record
	now     time.Time
	plan    api.Plan
	ids     map[string]bool // the IDs of the plan's actions
}

func (b *planner) add(a api.Action) api.Action {
	if b.ids == nil {
		b.ids = map[string]bool{}
	}
	b.plan.Actions = append(b.plan.Actions, a)
	b.ids[a.ID()] = true
	return a
}

// need returns those of ids the plan has.
func (b *planner) need(ids ...string) []string {
	var out []string
	for _, id := range ids {
		if b.ids[id] {
			out = append(out, id)
		}
	}
	return out
}

// networks: bridges to make or repair, first of all (machines need them).
func (b *planner) networks() {
	for _, n := range b.d.Networks {
		on, ok := b.o.Networks[n.Name]
		switch {
		case !ok || !on.Present:
			b.add(api.Action{Op: api.OpCreate, Kind: api.KindNetwork, Name: n.Name, Reason: fmt.Sprintf("bridge %s with %s", n.Bridge, n.Gateway)})
		case !on.Correct:
			b.add(api.Action{Op: api.OpRepair, Kind: api.KindNetwork, Name: n.Name, Reason: fmt.Sprintf("bridge %s or its DNS resolver is not as declared", n.Bridge), Changes: on.Drift})
		}
	}
}

// images: built when missing or when their definition changed.
func (b *planner) images() {
	for _, img := range b.d.Images {
		oi, ok := b.o.Images[img.Name]
		reason := ""
		switch {
		case !ok:
			reason = "not in the image store"
		case oi.SpecHash != "" && oi.SpecHash != img.Hash():
			reason = "its definition changed"
		default:
			continue
		}
		b.add(api.Action{Op: api.OpBuild, Kind: api.KindImage, Name: img.Name, Reason: reason, Changes: pullNotes(img)})
	}
}

// pullNotes say what building an image pulls from a registry: the digest a
// pinned reference names, or that a tag can move and how to pin it.
func pullNotes(img *spec.Image) []string {
	r := img.Registry
	if r == nil {
		return nil
	}
	if d := r.Digest(); d != "" {
		repo, _, _ := strings.Cut(r.Ref, "@")
		return []string{"pull " + repo + " pinned to " + d}
	}
	return []string{"pull " + r.Ref + ": a tag, which can move to another image; pin its digest (" + r.Ref +
		"@sha256:…) so that every host and every rebuild get the same image"}
}

// exits: machines that ended while berthd was not running. The restart policy
// decides now (the machine is planned with the record it leads to), and
// applying the plan records it.
func (b *planner) exits() {
	for _, n := range sortedNames(b.o.Machines) {
		om := b.o.Machines[n]
		if om.Exited == nil {
			continue
		}
		ex := *om.Exited
		out := AfterExit(n, b.d.Machine(n), b.records[n], ex, b.now)
		b.records[n] = out.Record
		b.add(api.Action{Op: api.OpRecord, Kind: api.KindMachine, Name: n, Reason: "it ended while berthd was not running (" + ex.Reason + ")", Exit: &ex})
	}
}

// machine plans one declared machine.
func (b *planner) machine(m *spec.Machine) {
	om := b.o.Machines[m.Name]
	if om == nil {
		om = &ObservedMachine{Name: m.Name}
	}
	needs := b.need(api.ID(api.OpRecord, api.KindMachine, m.Name), api.ID(api.OpBuild, api.KindImage, m.Image))
	if m.Network.Private() {
		needs = append(needs, b.need(api.ID(api.OpCreate, api.KindNetwork, m.Network.Name), api.ID(api.OpRepair, api.KindNetwork, m.Network.Name))...)
	}
	add := func(a api.Action) {
		a.Needs = needs
		b.add(a)
	}
	planMachine(add, m, om, b.records[m.Name], b.o, b.ids[api.ID(api.OpBuild, api.KindImage, m.Image)], b.now)
}

func planMachine(add func(api.Action), m *spec.Machine, om *ObservedMachine, rec store.Record, o *Observed, imageRebuilt bool, now time.Time) {
	act := func(op, reason string, changes ...string) {
		add(api.Action{Op: op, Kind: api.KindMachine, Name: m.Name, Reason: reason, Changes: changes})
	}
	if m.State == spec.StateStopped {
		if om.Running {
			act(api.OpStop, "declared stopped")
		}
		return
	}
	hold := rec.Hold
	if hold != nil && hold.SpecHash != "" && hold.SpecHash != m.Hash() {
		hold = nil // a changed definition releases the hold; apply clears the record
	}
	if hold != nil {
		if !om.Running {
			act(api.OpNote, hold.Note())
		}
		return
	}

	imageChanged := false
	if m.Root.Ephemeral && om.Running && om.Spec != nil && (imageRebuilt || om.Spec.Image != m.Image) {
		// Restarting would throw away what the machine wrote: the person
		// decides when.
		act(api.OpNote, "ephemeral: it runs on the image it started with; berth restart "+m.Name+" boots on image "+m.Image+" as it is now (nothing of the machine is kept)")
	}
	if om.HasRoot && !m.Root.Ephemeral {
		if oi, ok := o.Images[m.Image]; imageRebuilt || (ok && oi.Digest != om.RootDigest) || om.RootImage != m.Image {
			imageChanged = true
		}
	}
	if imageChanged {
		if m.Root.OnImageChange == spec.ImageChangeRecreate {
			act(api.OpRecreate, "its image changed and root.onImageChange is recreate: the root is made anew (its data is lost)")
			return
		}
		if !om.Running {
			// Starting on the old root is what a person expects of "keep": the
			// root is data. The note tells them how to move to the new image.
			act(api.OpStart, "not running (on its existing root; its image changed: berth recreate "+m.Name+" to rebuild it)")
			return
		}
		act(api.OpNote, "its image changed; it keeps its root: berth recreate "+m.Name+" rebuilds it from the new image, or set root.onImageChange: recreate")
	}

	if !om.Running {
		if rec.NextRestart.After(now) {
			act(api.OpNote, fmt.Sprintf("restarting in %s (back-off after %d restarts)", rec.NextRestart.Sub(now).Round(time.Second), rec.Restarts))
			return
		}
		if m.Root.Ephemeral {
			act(api.OpStart, "ephemeral: on a fresh throw-away layer over image "+m.Image)
			return
		}
		if !om.HasRoot {
			act(api.OpStart, "new: its root is made from image "+m.Image)
			return
		}
		reason := "not running"
		if rec.LastExit != nil {
			reason = "not running (last exit: " + rec.LastExit.Reason + ")"
		}
		act(api.OpStart, reason)
		return
	}

	if om.Spec == nil {
		return
	}
	d := diffMachine(om.Spec, m)
	if len(d.restart) > 0 {
		act(api.OpRestart, "its definition changed in a way that needs a reboot", d.restart...)
		return
	}
	if len(d.live) > 0 || len(d.ports) > 0 || len(d.later) > 0 {
		act(api.OpUpdate, "applied live, nothing restarts", append(append(append([]string{}, d.live...), d.ports...), d.later...)...)
	}
	if om.LinkMissing {
		act(api.OpRepair, "its network link was deleted; it is put back")
	}
}

// undeclared: machines that run but are no longer declared are stopped; their
// roots stay unless pruning was asked for.
func (b *planner) undeclared(prune bool) {
	for _, n := range sortedNames(b.o.Machines) {
		om := b.o.Machines[n]
		if b.d.Machine(n) != nil {
			continue
		}
		needs := b.need(api.ID(api.OpRecord, api.KindMachine, n))
		if om.Running {
			reason := "no longer declared; its root is kept"
			if om.Spec != nil && om.Spec.Root.Ephemeral {
				reason = "no longer declared; ephemeral: nothing of it is kept"
			}
			b.add(api.Action{Op: api.OpStop, Kind: api.KindMachine, Name: n, Reason: reason, Needs: needs})
		}
		if om.Running && om.Spec != nil && om.Spec.Root.Ephemeral && !om.HasRoot {
			// Nothing of it is data: its address lease goes with it.
			b.add(api.Action{Op: api.OpRemove, Kind: api.KindMachine, Name: n, Reason: "no longer declared; ephemeral: its address lease and UID range are released",
				Needs: append(needs, b.need(api.ID(api.OpStop, api.KindMachine, n))...)})
			continue
		}
		if prune && om.HasRoot {
			b.add(api.Action{Op: api.OpRemove, Kind: api.KindMachine, Name: n, Reason: "no longer declared: prune deletes its root",
				Needs: append(needs, b.need(api.ID(api.OpStop, api.KindMachine, n))...)})
		}
	}
}

// rules: berth's nftables tables follow the running machines (their port
// forwards and anti-spoofing guards): they are rebuilt after the machines
// that start or stop in this plan, and when they drifted.
func (b *planner) rules() {
	var after []string
	follow := false
	for _, a := range b.plan.Actions {
		switch {
		case a.Kind == api.KindMachine && (a.Op == api.OpStart || a.Op == api.OpStop || a.Op == api.OpRestart || a.Op == api.OpRecreate):
			follow = true
			after = append(after, a.ID())
		case a.Kind == api.KindNetwork:
			after = append(after, a.ID())
		}
	}
	switch {
	case !b.o.RulesCurrent:
		b.add(api.Action{Op: api.OpUpdate, Kind: api.KindRules, Name: "berth", Reason: "NAT, port forwards or anti-spoofing guards differ from the definitions", Changes: b.o.RulesDrift, After: after})
	case follow:
		b.add(api.Action{Op: api.OpUpdate, Kind: api.KindRules, Name: "berth", Reason: RulesFollow, After: after})
	}
}

// RulesFollow is the reason of the rules update that follows machines
// starting or stopping.
const RulesFollow = "port forwards and guards follow the running machines"

// removedNetworks: networks berth made that are no longer declared go last,
// once the rules and the machines no longer use them.
func (b *planner) removedNetworks() {
	var after []string
	for _, a := range b.plan.Actions {
		if a.Kind == api.KindRules || a.Kind == api.KindMachine && a.Op == api.OpStop {
			after = append(after, a.ID())
		}
	}
	for _, n := range sortedNames(b.o.Networks) {
		if on := b.o.Networks[n]; b.d.Network(n) == nil && on.Present {
			b.add(api.Action{Op: api.OpRemove, Kind: api.KindNetwork, Name: n, Reason: "no longer declared; bridge " + on.Bridge + " is deleted", After: after})
		}
	}
}

func sortedNames[T any](m map[string]T) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
