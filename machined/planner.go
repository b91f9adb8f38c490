package machined

import (
	"fmt"
	"sort"
	"time"

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
	Exited *ExitInfo
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
	Addresses                []string
	RootPath                 string

	HasRoot      bool
	RootImage    string
	RootDigest   string
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

// PlanOptions tune a plan.
type PlanOptions struct {
	// Prune removes the roots of machines that are no longer declared (their data!).
	Prune bool
	Now   time.Time
}

// BuildPlan is the heart of the reconciler: the ordered, idempotent actions that
// take the observed host to the desired definitions. It is a pure function.
func BuildPlan(d *spec.Set, o *Observed, records map[string]Record, opt PlanOptions) *Plan {
	p := &Plan{}
	add := func(a Action) { p.Actions = append(p.Actions, a) }
	now := opt.Now
	if now.IsZero() {
		now = time.Now()
	}

	// Networks first: machines need their bridges.
	declaredNet := map[string]bool{}
	for _, n := range d.Networks {
		declaredNet[n.Name] = true
		on, ok := o.Networks[n.Name]
		switch {
		case !ok || !on.Present:
			add(Action{Op: OpCreate, Kind: KindNetwork, Name: n.Name, Reason: fmt.Sprintf("bridge %s with %s", n.Bridge, n.Gateway)})
		case !on.Correct:
			add(Action{Op: OpRepair, Kind: KindNetwork, Name: n.Name, Reason: fmt.Sprintf("bridge %s is not as declared", n.Bridge), Changes: on.Drift})
		}
	}

	// Images: built when missing or when their definition changed.
	rebuilt := map[string]bool{}
	for _, img := range d.Images {
		oi, ok := o.Images[img.Name]
		switch {
		case !ok:
			add(Action{Op: OpBuild, Kind: KindImage, Name: img.Name, Reason: "not in the image store"})
			rebuilt[img.Name] = true
		case oi.SpecHash != "" && oi.SpecHash != img.Hash():
			add(Action{Op: OpBuild, Kind: KindImage, Name: img.Name, Reason: "its definition changed"})
			rebuilt[img.Name] = true
		}
	}

	// Machines.
	declared := map[string]bool{}
	for _, m := range d.Machines {
		declared[m.Name] = true
		om := o.Machines[m.Name]
		if om == nil {
			om = &ObservedMachine{Name: m.Name}
		}
		rec := records[m.Name]
		planMachine(add, m, om, rec, o, rebuilt[m.Image], now)
	}

	// Machines that run but are no longer declared are stopped; their roots stay
	// unless pruning was asked for.
	var names []string
	for n := range o.Machines {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		om := o.Machines[n]
		if declared[n] {
			continue
		}
		if om.Running {
			add(Action{Op: OpStop, Kind: KindMachine, Name: n, Reason: "no longer declared; its root is kept"})
		}
		if opt.Prune && om.HasRoot {
			add(Action{Op: OpRemove, Kind: KindMachine, Name: n, Reason: "no longer declared: prune deletes its root"})
		}
	}

	if !o.RulesCurrent {
		add(Action{Op: OpUpdate, Kind: KindRules, Name: "berth", Reason: "NAT, port forwards or anti-spoofing guards differ from the definitions", Changes: o.RulesDrift})
	}

	// Networks berth made that are no longer declared go once no machine uses them.
	var onames []string
	for n := range o.Networks {
		onames = append(onames, n)
	}
	sort.Strings(onames)
	for _, n := range onames {
		if on := o.Networks[n]; !declaredNet[n] && on.Present {
			add(Action{Op: OpRemove, Kind: KindNetwork, Name: n, Reason: "no longer declared; bridge " + on.Bridge + " is deleted"})
		}
	}
	return p
}

func planMachine(add func(Action), m *spec.Machine, om *ObservedMachine, rec Record, o *Observed, imageRebuilt bool, now time.Time) {
	act := func(op, reason string, changes ...string) {
		add(Action{Op: op, Kind: KindMachine, Name: m.Name, Reason: reason, Changes: changes})
	}
	if m.State == spec.StateStopped {
		if om.Running {
			act(OpStop, "declared stopped")
		}
		return
	}
	hold := rec.Hold
	if hold != nil && hold.SpecHash != "" && hold.SpecHash != m.Hash() {
		hold = nil // a changed definition releases the hold; apply clears the record
	}
	if hold != nil {
		if !om.Running {
			act(OpNote, holdNote(hold))
		}
		return
	}

	imageChanged := false
	if om.HasRoot {
		if oi, ok := o.Images[m.Image]; imageRebuilt || (ok && oi.Digest != om.RootDigest) || om.RootImage != m.Image {
			imageChanged = true
		}
	}
	if imageChanged {
		if m.Root.OnImageChange == spec.ImageChangeRecreate {
			act(OpRecreate, "its image changed and root.onImageChange is recreate: the root is made anew (its data is lost)")
			return
		}
		if !om.Running {
			// Starting on the old root is what a person expects of "keep": the
			// root is data. The note tells them how to move to the new image.
			act(OpStart, "not running (on its existing root; its image changed: berth recreate "+m.Name+" to rebuild it)")
			return
		}
		act(OpNote, "its image changed; it keeps its root: berth recreate "+m.Name+" rebuilds it from the new image, or set root.onImageChange: recreate")
	}

	if !om.Running {
		if rec.NextRestart.After(now) {
			act(OpNote, fmt.Sprintf("restarting in %s (back-off after %d restarts)", rec.NextRestart.Sub(now).Round(time.Second), rec.Restarts))
			return
		}
		if !om.HasRoot {
			act(OpStart, "new: its root is made from image "+m.Image)
			return
		}
		reason := "not running"
		if rec.LastExit != nil {
			reason = "not running (last exit: " + rec.LastExit.Reason + ")"
		}
		act(OpStart, reason)
		return
	}

	if om.Spec == nil {
		return
	}
	d := diffMachine(om.Spec, m)
	if len(d.restart) > 0 {
		act(OpRestart, "its definition changed in a way that needs a reboot", d.restart...)
		return
	}
	if len(d.live) > 0 || len(d.ports) > 0 || len(d.later) > 0 {
		act(OpUpdate, "applied live, nothing restarts", append(append(append([]string{}, d.live...), d.ports...), d.later...)...)
	}
	if om.LinkMissing {
		act(OpRepair, "its network link was deleted; it is put back")
	}
}

func holdNote(h *Hold) string {
	switch h.Reason {
	case HoldStopped:
		return "held stopped (" + h.Message + "): berth start or berth release to let it run"
	case HoldFailed:
		return "failed (" + h.Message + "): berth start to try again"
	default:
		return "exited (" + h.Message + "), restart policy says stay down: berth start to run it"
	}
}
