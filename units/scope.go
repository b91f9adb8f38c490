package units

import (
	"context"
	"fmt"
	"syscall"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Scope describes the transient scope of one machine.
type Scope struct {
	Machine     string        // machine name; the unit is ScopeName(Machine)
	Description string        // "berth machine NAME" when empty
	PIDs        []int         // moved into the scope at creation: the supervisor
	Resources   Resources     // limits as scope properties
	StopTimeout time.Duration // the machine's clean-poweroff timeout (0: 90 s)
	// Controller is the bus name that systemd asks (RequestStop) to stop the scope
	// instead of signalling its processes; StartScope fills in its own connection.
	Controller string
	// DeviceAllow is the machine's device policy: with it the scope gets
	// DevicePolicy=closed and these DeviceAllow= entries ("/dev/null rwm",
	// "char-pts rwm"), so systemd fences the machine's devices on the scope,
	// above the delegated subtree the guest sees.
	DeviceAllow []DeviceAllow
}

// DeviceAllow is one DeviceAllow= entry: a device node path or a class
// ("char-pts") and the access, "rwm".
type DeviceAllow struct {
	Path   string
	Access string
}

// stopMargin is how much longer than the machine's own stop timeout systemd
// waits before it SIGKILLs a scope whose controller was asked to stop it: the
// supervisor's own escalation (SIGKILL of the payload after the stop timeout)
// must win, so systemd's never has to fire.
const stopMargin = 15 * time.Second

// defaultStopTimeout matches systemd's DefaultTimeoutStopSec.
const defaultStopTimeout = 90 * time.Second

// stopAfter are the units a machine scope is ordered after. Stop order is the
// reverse of start order, so at host shutdown every machine is powered off before
// networking, remote and local file systems, D-Bus (which carries RequestStop to
// the supervisor) and systemd-machined (which the supervisor unregisters from)
// go away. Ordering on a unit that does not exist is harmless.
var stopAfter = []string{
	"local-fs.target", "remote-fs.target", "network.target",
	"dbus.service", "systemd-machined.service",
}

// stopBefore: berthd.service is stopped before the machines at host shutdown,
// so a berthd that sees its machines power off does not take that for a stop to
// act on (restart, or hold); `systemctl stop berthd` still leaves them running,
// because ordering does not propagate stops.
var stopBefore = []string{BerthdUnit}

// ScopeProperties returns the properties of the machine's transient scope. It is
// a pure function, table-tested; StartScope sends its result.
//
// The scope holds the supervisor (and below it, in delegated "supervisor" and
// "payload" children, everything of the machine), so how systemd stops it matters:
//
//   - Controller = the supervisor's bus name: `systemctl stop machine-NAME.scope`,
//     `machinectl terminate NAME` and host shutdown then send RequestStop to the
//     supervisor, which powers the guest off cleanly (SIGRTMIN+3 to its init)
//     within the machine's stop timeout, as nspawn does.
//   - KillMode=mixed, KillSignal=SIGRTMIN+3 (nspawn's): a scope has no main
//     process, so without a controller (the supervisor is gone) systemd signals
//     nobody first and SIGKILLs what is left at once, like berth terminate; it
//     never sprays SIGTERM or SIGRTMIN+3 over every process of the guest, which
//     would kill its daemons mid-write while its init tries to shut down.
//   - TimeoutStopSec = stop timeout + a margin, so systemd's SIGKILL comes after
//     the supervisor's own.
//   - Delegate=yes: the supervisor makes its own sub-cgroups; CollectMode
//     inactive-or-failed: a failed scope never lingers and blocks the name.
//   - DevicePolicy=closed with the machine's DeviceAllow= list (as nspawn's
//     unit): the device fence sits on the scope, which the guest, whose cgroup
//     namespace starts below it, cannot change.
//   - No AddRef: it pins a scope to its creator's bus connection even when empty;
//     our creator lives inside the scope, so there is nothing to pin.
func ScopeProperties(sc Scope) ([]sddbus.Property, error) {
	if sc.Machine == "" {
		return nil, fmt.Errorf("scope: machine name is empty")
	}
	if len(sc.PIDs) == 0 {
		return nil, fmt.Errorf("machine %q: scope: no process to put in it", sc.Machine)
	}
	desc := sc.Description
	if desc == "" {
		desc = "berth machine " + sc.Machine
	}
	pids := make([]uint32, len(sc.PIDs))
	for i, p := range sc.PIDs {
		if p <= 0 {
			return nil, fmt.Errorf("machine %q: scope: invalid PID %d", sc.Machine, p)
		}
		pids[i] = uint32(p)
	}
	stop := sc.StopTimeout
	if stop <= 0 {
		stop = defaultStopTimeout
	}
	res, err := ResourceProperties(sc.Resources)
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", sc.Machine, err)
	}
	props := []sddbus.Property{
		prop("PIDs", pids),
		prop("Slice", MachineSlice),
		prop("Description", desc),
		prop("Delegate", true),
		prop("CollectMode", "inactive-or-failed"),
		prop("KillMode", "mixed"),
		prop("KillSignal", int32(sigRTMIN+3)),
		prop("TimeoutStopUSec", uint64((stop+stopMargin)/time.Microsecond)),
		prop("After", stopAfter),
		prop("Before", stopBefore),
	}
	if sc.Controller != "" {
		props = append(props, prop("Controller", sc.Controller))
	}
	if sc.DeviceAllow != nil {
		allow := make([]struct{ Path, Access string }, len(sc.DeviceAllow))
		for i, a := range sc.DeviceAllow {
			allow[i].Path, allow[i].Access = a.Path, a.Access
		}
		props = append(props, prop("DevicePolicy", "closed"), prop("DeviceAllow", allow))
	}
	return append(props, res...), nil
}

// sigRTMIN is the kernel's SIGRTMIN (glibc keeps 32 and 33 for itself).
const sigRTMIN = 34

// StartScope creates the machine's transient scope (systemd-run --scope
// --slice=machine.slice -p Delegate=yes …, with the processes of sc.PIDs) and waits
// until systemd has started it. This connection becomes the scope's Controller:
// keep it open for the machine's life and handle OnStopRequest. It returns the
// unit name and the scope's cgroup path ("/machine.slice/machine-web.scope").
func (s *Systemd) StartScope(ctx context.Context, sc Scope) (unit, cgroup string, err error) {
	if sc.Controller == "" {
		sc.Controller = s.UniqueName()
	}
	props, err := ScopeProperties(sc)
	if err != nil {
		return "", "", err
	}
	unit = ScopeName(sc.Machine)
	if err := s.startTransient(ctx, unit, props); err != nil {
		if isBusError(err, errUnitExists) {
			return "", "", fmt.Errorf("machine %q: scope %s already exists: is the machine already running? (systemctl status %s)", sc.Machine, unit, unit)
		}
		return "", "", fmt.Errorf("machine %q: start scope %s: %w", sc.Machine, unit, err)
	}
	v, err := s.unitProperty(ctx, unit, systemdScope, "ControlGroup")
	if err != nil {
		return unit, "", fmt.Errorf("machine %q: scope %s: read its cgroup: %w", sc.Machine, unit, err)
	}
	cgroup, _ = v.(string)
	if cgroup == "" {
		cgroup = "/" + MachineSlice + "/" + unit
	}
	return unit, cgroup, nil
}

// SetResources changes a running scope's limits live (systemctl set-property
// --runtime UNIT …): runtime only, because the scope is transient and the next
// start sets them from the definition again.
func (s *Systemd) SetResources(ctx context.Context, unit string, r Resources) error {
	props, err := ResourceProperties(r)
	if err != nil {
		return fmt.Errorf("scope %s: %w", unit, err)
	}
	if err := s.manager().CallWithContext(ctx, systemdManager+".SetUnitProperties", 0, unit, true, props).Err; err != nil {
		return fmt.Errorf("scope %s: set limits: %w", unit, err)
	}
	return nil
}

// KillScope sends sig to processes of the scope: whom is "all" or "main"
// (systemctl kill --kill-whom=all -s SIG UNIT).
func (s *Systemd) KillScope(ctx context.Context, unit, whom string, sig syscall.Signal) error {
	if err := s.manager().CallWithContext(ctx, systemdManager+".KillUnit", 0, unit, whom, int32(sig)).Err; err != nil {
		if isBusError(err, errNoSuchUnit) {
			return nil
		}
		return fmt.Errorf("scope %s: kill: %w", unit, err)
	}
	return nil
}

// StopScope stops the scope and waits for it (systemctl stop UNIT). The caller
// must not be inside the scope. A scope that is already gone is success.
func (s *Systemd) StopScope(ctx context.Context, unit string) error {
	w := make(chan string, 1)
	var job dbus.ObjectPath
	s.mu.Lock()
	err := s.manager().CallWithContext(ctx, systemdManager+".StopUnit", 0, unit, "replace").Store(&job)
	if err == nil {
		s.jobs[job] = w
	}
	s.mu.Unlock()
	if err != nil {
		if isBusError(err, errNoSuchUnit) {
			return nil
		}
		return fmt.Errorf("scope %s: stop: %w", unit, err)
	}
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("scope %s: stop: %w", unit, ctx.Err())
	}
}

// ScopeState is the scope's ActiveState ("active", "deactivating", "inactive",
// "failed"); a unit systemd does not know is "inactive".
func (s *Systemd) ScopeState(ctx context.Context, unit string) (string, error) {
	v, err := s.unitProperty(ctx, unit, "org.freedesktop.systemd1.Unit", "ActiveState")
	if err != nil {
		return "", fmt.Errorf("scope %s: state: %w", unit, err)
	}
	st, _ := v.(string)
	return st, nil
}

// HelperScope is the transient scope of one of berth's helper processes that
// must outlive berthd.service (a network's DNS resolver): a scope of its own
// in system.slice, so restarting or stopping berthd.service leaves it alone.
type HelperScope struct {
	Unit        string // e.g. berth-dns-lan.scope (HelperScopeName)
	Description string
	PID         int
}

// HelperScopeName is the scope unit of a helper: berth-KIND-NAME.scope with
// NAME escaped.
func HelperScopeName(kind, name string) string {
	return "berth-" + kind + "-" + EscapeUnitName(name) + ".scope"
}

// HelperScopeProperties returns the properties of a helper's scope; pure,
// table-tested. The helper stops on SIGTERM (systemctl stop), and a failed or
// finished scope is collected at once so it never blocks the name.
func HelperScopeProperties(sc HelperScope) ([]sddbus.Property, error) {
	if sc.Unit == "" || sc.PID <= 0 {
		return nil, fmt.Errorf("helper scope %q: needs a unit name and a process (PID %d)", sc.Unit, sc.PID)
	}
	return []sddbus.Property{
		prop("PIDs", []uint32{uint32(sc.PID)}),
		prop("Slice", "system.slice"),
		prop("Description", sc.Description),
		prop("CollectMode", "inactive-or-failed"),
		prop("After", []string{"network.target"}),
	}, nil
}

// StartHelperScope moves the helper process into its own transient scope
// (systemd-run --scope --unit=UNIT --slice=system.slice) and waits until
// systemd has started it. A scope of that name left from an earlier helper
// that is gone is an error from systemd: the caller stops it first.
func (s *Systemd) StartHelperScope(ctx context.Context, sc HelperScope) error {
	props, err := HelperScopeProperties(sc)
	if err != nil {
		return err
	}
	if err := s.startTransient(ctx, sc.Unit, props); err != nil {
		if isBusError(err, errUnitExists) {
			return fmt.Errorf("scope %s already exists (systemctl status %s)", sc.Unit, sc.Unit)
		}
		return fmt.Errorf("start scope %s: %w", sc.Unit, err)
	}
	return nil
}
