package api

import (
	"fmt"
	"strings"
)

// Operations of a plan, in the order the reconciler applies them: networks first,
// then images, machine roots, and machines; removals last.
const (
	OpCreate   = "create"   // a network, or a machine's root
	OpBuild    = "build"    // an image
	OpStart    = "start"    // a machine
	OpUpdate   = "update"   // live change: limits, port forwards, a network's address
	OpRestart  = "restart"  // a change that needs the machine rebooted
	OpRecreate = "recreate" // a new root from a changed image (only when asked)
	OpStop     = "stop"     // a machine declared stopped, or no longer declared
	OpRepair   = "repair"   // drift: something deleted behind berth's back
	OpRemove   = "remove"   // a network no longer declared, a pruned root
	OpRecord   = "record"   // an exit that happened while berthd was down: the restart policy decides
	OpNote     = "note"     // nothing will be done, but a person should know
)

// Kinds of objects a plan acts on.
const (
	KindNetwork = "network"
	KindImage   = "image"
	KindMachine = "machine"
	KindRules   = "rules"
)

// Action is one step of a plan. Plans are data: `berth plan` prints them, tests
// compare them, and the reconciler applies them, each once every action it
// Needs has succeeded (an action whose need failed fails with it, naming it)
// and every action it comes After is over.
type Action struct {
	Op      string   `json:"op"`
	Kind    string   `json:"kind"`
	Name    string   `json:"name"`
	Reason  string   `json:"reason"`
	Changes []string `json:"changes,omitempty"`
	// Needs are the IDs of the actions of the same plan that must succeed
	// first: a machine's start needs its image's build and its network's
	// creation.
	Needs []string `json:"needs,omitempty"`
	// After are the IDs of actions that must be over first, however they
	// went: the rules update follows the machines' starts and stops (with the
	// machines that did start), a network's removal follows the rules and the
	// stops of its machines.
	After []string `json:"after,omitempty"`
	// Exit is how the machine ended, for OpRecord.
	Exit *ExitInfo `json:"exit,omitempty"`
}

// ID names the action within its plan: "start machine web".
func (a Action) ID() string { return a.Op + " " + a.Kind + " " + a.Name }

func (a Action) String() string {
	sym := map[string]string{OpCreate: "+", OpBuild: "+", OpStart: "+", OpUpdate: "~", OpRestart: "~",
		OpRecreate: "!", OpStop: "-", OpRepair: "~", OpRemove: "-", OpRecord: "*", OpNote: "#"}[a.Op]
	s := fmt.Sprintf("%s %s %s: %s", sym, a.Kind, a.Name, a.Op)
	if a.Reason != "" {
		s += " (" + a.Reason + ")"
	}
	for _, c := range a.Changes {
		s += "\n      " + c
	}
	return s
}

// Plan is the ordered list of actions that brings the host to the definitions.
type Plan struct {
	Actions []Action `json:"actions"`
	// Errors are definition errors (file:line:col: …); a plan with errors
	// changes nothing.
	Errors []string `json:"errors,omitempty"`
}

// Changes reports whether applying the plan would change anything (notes do not).
func (p *Plan) Changes() bool {
	for _, a := range p.Actions {
		if a.Op != OpNote {
			return true
		}
	}
	return false
}

// String renders the plan as `berth plan` prints it.
func (p *Plan) String() string {
	var b strings.Builder
	for _, e := range p.Errors {
		fmt.Fprintf(&b, "error: %s\n", e)
	}
	if len(p.Errors) > 0 {
		return b.String()
	}
	if len(p.Actions) == 0 {
		return "No changes: the host matches the definitions.\n"
	}
	for _, a := range p.Actions {
		b.WriteString(a.String())
		b.WriteByte('\n')
	}
	if !p.Changes() {
		b.WriteString("No changes: the host matches the definitions.\n")
	}
	return b.String()
}

// ID is the ID of the action op kind name.
func ID(op, kind, name string) string { return Action{Op: op, Kind: kind, Name: name}.ID() }
