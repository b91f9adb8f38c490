package api

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Machine states as `berth list` shows them.
const (
	StateRunning  = "running"  // booted (READY=1, or init exec'd for non-systemd guests)
	StateBooting  = "booting"  // supervisor up, guest not ready yet
	StateStopping = "stopping" // poweroff requested
	StateStopped  = "stopped"  // not running
	StateFailed   = "failed"   // not running, gave up restarting or could not start
)

// MachineStatus is one machine as `berth list` and `berth status` show it.
type MachineStatus struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Declared bool   `json:"declared"`
	// Desired is the state the definition asks for ("running" or "stopped");
	// empty for a machine that is not (or no longer) declared.
	Desired     string `json:"desired,omitempty"`
	Hold        *Hold  `json:"hold,omitempty"`
	Image       string `json:"image,omitempty"`
	ImageDigest string `json:"imageDigest,omitempty"`
	// ImageRef is the OCI reference the machine's image was pulled from.
	ImageRef   string    `json:"imageRef,omitempty"`
	Network    string    `json:"network,omitempty"`
	Addresses  []string  `json:"addresses,omitempty"`
	Ports      []string  `json:"ports,omitempty"`
	Since      time.Time `json:"since,omitzero"`
	ReadySince time.Time `json:"readySince,omitzero"`
	Source     string    `json:"source,omitempty"` // file:line of the definition

	SupervisorPID int            `json:"supervisorPID,omitempty"`
	LeaderPID     int            `json:"leaderPID,omitempty"`
	Cgroup        string         `json:"cgroup,omitempty"`
	Driver        string         `json:"driver,omitempty"`
	Limits        map[string]any `json:"limits,omitempty"`
	Usage         map[string]any `json:"usage,omitempty"`
	Root          string         `json:"root,omitempty"`
	RootStrategy  string         `json:"rootStrategy,omitempty"`
	// Seccomp and DeviceFence say how a running machine is isolated: its
	// system call filter, and where its device policy sits.
	Seccomp     string `json:"seccomp,omitempty"`
	DeviceFence string `json:"deviceFence,omitempty"`
	// Users is the machine's range of host UIDs and GIDs (privateUsers);
	// nil when its root is the host's root.
	Users *Users `json:"users,omitempty"`

	// Health is the running machine's last health check (health.go);
	// NotifyStatus its last sd_notify STATUS=.
	Health       *Health `json:"health,omitempty"`
	NotifyStatus string  `json:"notifyStatus,omitempty"`

	LastExit  *ExitInfo `json:"lastExit,omitempty"`
	Restarts  int       `json:"restarts,omitempty"`
	LastError string    `json:"lastError,omitempty"`
	Notes     []string  `json:"notes,omitempty"`

	// Filled by Status only.
	Console []string `json:"console,omitempty"`
	Events  []Event  `json:"events,omitempty"`
}

// Users is a machine's range of host UIDs and GIDs: its 0…Size-1 are the
// host's Base…Base+Size-1.
type Users struct {
	Base uint32 `json:"base"`
	Size uint32 `json:"size"`
	// Root says how the running machine's root maps into the range:
	// "idmapped" (mounted so, files on disk stay 0…65535) or "shifted" (its
	// files were shifted into the range once); empty while it is stopped
	// (the range is kept for it).
	Root string `json:"root,omitempty"`
	// Why says why a shifted root is not idmapped.
	Why string `json:"why,omitempty"`
}

func (u *Users) String() string {
	s := fmt.Sprintf("host UIDs and GIDs %d-%d", u.Base, u.Base+u.Size-1)
	if u.Root != "" && u.Why != "" {
		return s + ", root " + u.Root + " (" + u.Why + ")"
	}
	if u.Root != "" {
		return s + ", root " + u.Root
	}
	return s + " (kept while the machine is stopped)"
}

// NetworkStatus is one network as `berth network list` shows it.
type NetworkStatus struct {
	Name     string   `json:"name"`
	Bridge   string   `json:"bridge"`
	Subnet   string   `json:"subnet"`
	Subnet6  string   `json:"subnet6,omitempty"`
	Gateway  string   `json:"gateway,omitempty"`
	NAT      bool     `json:"nat"`
	Present  bool     `json:"present"`
	Machines []string `json:"machines"`
	// Domain is the machines' domain when the network has its resolver on;
	// Resolver says whether that resolver runs.
	Domain   string `json:"domain,omitempty"`
	Resolver bool   `json:"resolver"`
}

// DaemonStatus describes berthd itself.
type DaemonStatus struct {
	// Daemon is false when no berthd runs and the CLI answered by itself.
	Daemon        bool         `json:"daemon"`
	PID           int          `json:"pid"`
	Version       string       `json:"version"`
	StateDir      string       `json:"stateDir"`
	Started       time.Time    `json:"started"`
	Driver        string       `json:"driver"`
	Sources       []SourceInfo `json:"sources"`
	LastReconcile time.Time    `json:"lastReconcile,omitzero"`
	Errors        []string     `json:"errors,omitempty"` // definition errors of the current sources
}

// SourceInfo is one source of definitions and how its last load went.
type SourceInfo struct {
	Kind     string    `json:"kind"` // dir, git, applied
	Location string    `json:"location"`
	Revision string    `json:"revision,omitempty"`
	Updated  time.Time `json:"updated,omitzero"`
	Error    string    `json:"error,omitempty"`
}

// PlanRequest asks what applying would do. Path, when set, stands for the
// definitions under it as `berth apply PATH` would take them; Prune also removes
// the roots of machines that are no longer declared.
type PlanRequest struct {
	Path  string `json:"path,omitempty"`
	Prune bool   `json:"prune,omitempty"`
}

// ApplyRequest applies definitions: those under Path (kept by berthd as an
// applied source), or, without Path, the current sources once more.
type ApplyRequest struct {
	Path  string `json:"path,omitempty"`
	Prune bool   `json:"prune,omitempty"`
	// Forget drops the applied source Path instead: its machines are no longer
	// declared.
	Forget bool `json:"forget,omitempty"`
}

// ApplyResult is the plan that was applied and how each step went.
type ApplyResult struct {
	Plan    *Plan          `json:"plan"`
	Results []ActionResult `json:"results"`
}

// ActionResult is how one action of a plan went.
type ActionResult struct {
	Action Action `json:"action"`
	Error  string `json:"error,omitempty"`
}

// VerbRequest runs one imperative verb on many machines together (berth
// stop a b c): one request, every machine's action in flight at once.
type VerbRequest struct {
	Verb  string   `json:"verb"`
	Names []string `json:"names"`
}

// VerbOutcome is one machine's result of a VerbRequest: Error is empty when
// the verb did what it says.
type VerbOutcome struct {
	Machine string `json:"machine"`
	Error   string `json:"error,omitempty"`
}

// KillRequest sends a signal to a machine's leader or to all its processes.
type KillRequest struct {
	Signal string `json:"signal"`
	Whom   string `json:"whom"`
}

// API is what the CLI uses: the daemon over its socket (Client), or, when no
// daemon runs, a Manager in the CLI's own process for one-shot work.
type API interface {
	List(ctx context.Context) ([]MachineStatus, error)
	Status(ctx context.Context, name string) (*MachineStatus, error)
	// Verb runs an imperative verb on a machine: start, stop, poweroff, reboot,
	// terminate, release, recreate, remove.
	Verb(ctx context.Context, name, verb string) error
	// Verbs runs one verb on many machines at once; an error is the
	// request's, each machine's outcome is in its VerbOutcome.
	Verbs(ctx context.Context, req VerbRequest) ([]VerbOutcome, error)
	Kill(ctx context.Context, name string, req KillRequest) error
	Plan(ctx context.Context, req PlanRequest) (*Plan, error)
	Apply(ctx context.Context, req ApplyRequest) (*ApplyResult, error)
	Networks(ctx context.Context) ([]NetworkStatus, error)
	Daemon(ctx context.Context) (*DaemonStatus, error)
	// Definition is a declared machine's effective definition (berth show).
	Definition(ctx context.Context, name string) (*Definition, error)
	// Events calls fn for the events after seq, then, when follow, for new ones
	// until ctx ends or fn returns an error.
	Events(ctx context.Context, seq uint64, machine string, follow bool, fn func(Event) error) error
}

// Hold reasons. A held machine is not started by the reconciler although its
// definition says running, until `berth start`/`berth release` or a change of its
// definition releases it. This is how an imperative verb is not undone by the next
// reconcile, and how a machine that powered itself off stays off.
const (
	HoldStopped = "stopped" // berth stop / poweroff / terminate, or a stock tool stopped it
	HoldExited  = "exited"  // the machine ended and its restart policy says not to restart
	HoldFailed  = "failed"  // restarted too often; given up
)

// Hold records why a declared machine is not being started.
type Hold struct {
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
	Since   time.Time `json:"since"`
	// SpecHash is the definition's hash when the hold was set: a different
	// definition releases the hold.
	SpecHash string `json:"specHash,omitempty"`
}

// Note says what the hold means and how a person ends it, as `berth list`
// and `berth status` show it.
func (h *Hold) Note() string {
	switch h.Reason {
	case HoldStopped:
		return "held stopped (" + h.Message + "): berth start or berth release to let it run"
	case HoldFailed:
		return "failed (" + h.Message + "): berth start to try again"
	default:
		return "exited (" + h.Message + "), restart policy says stay down: berth start to run it"
	}
}

// ExitInfo is how a machine last ended.
type ExitInfo struct {
	Code    int       `json:"code"`
	Reason  string    `json:"reason"`
	Time    time.Time `json:"time"`
	Started time.Time `json:"started,omitzero"` // when that run began
	// StoppedBy says who stopped it when not berth and not the guest itself.
	StoppedBy string `json:"stoppedBy,omitempty"`
}

// Who stopped a machine, when it was neither berth nor the guest.
const (
	StoppedBySystemd      = "systemd"       // systemctl stop of its scope, machinectl terminate
	StoppedByHostShutdown = "host-shutdown" // the host is shutting down
)

// Event kinds. They are part of the API (`berth events -o json`): add, never rename.
const (
	EvMachineStarting   = "machine.starting"
	EvMachineStarted    = "machine.started"
	EvMachineRunning    = "machine.running"
	EvMachineStopping   = "machine.stopping"
	EvMachineStopped    = "machine.stopped"
	EvMachineExited     = "machine.exited"
	EvMachineFailed     = "machine.failed"
	EvMachineRestarting = "machine.restarting"
	EvMachineUpdated    = "machine.updated"
	EvMachineHeld       = "machine.held"
	EvMachineReleased   = "machine.released"
	EvMachineAdopted    = "machine.adopted"
	EvMachineRecreated  = "machine.recreated"
	EvMachineRemoved    = "machine.removed"
	EvNetworkCreated    = "network.created"
	EvNetworkRemoved    = "network.removed"
	EvImageBuilt        = "image.built"
	EvImageProgress     = "image.progress"
	EvDriftFixed        = "drift.fixed"
	EvDefinitionError   = "definition.error"
	EvReconcileError    = "reconcile.error"
	EvSourceUpdated     = "source.updated"
)

// Event is one entry of the event log.
type Event struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Machine   string    `json:"machine,omitempty"`
	Network   string    `json:"network,omitempty"`
	Image     string    `json:"image,omitempty"`
	Message   string    `json:"message"`
	Reconcile string    `json:"reconcile,omitempty"`
}

// Definition is a machine's effective definition, as `berth show` prints it:
// its profiles merged in and the defaults filled in (the JSON of a
// spec.Machine), with where each field was written. A field path (resources,
// resources.memoryMax) missing from Origins has its default.
type Definition struct {
	Definition json.RawMessage        `json:"definition"`
	Origins    map[string]FieldOrigin `json:"origins"`
}

// FieldOrigin is where a field was written: a file and line, in the machine's
// own document or, with Profile set, in that profile's.
type FieldOrigin struct {
	Profile string `json:"profile,omitempty"`
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
}
