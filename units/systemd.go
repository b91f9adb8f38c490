package units

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

const (
	systemdDest      = "org.freedesktop.systemd1"
	systemdPath      = dbus.ObjectPath("/org/freedesktop/systemd1")
	systemdManager   = "org.freedesktop.systemd1.Manager"
	systemdScope     = "org.freedesktop.systemd1.Scope"
	systemdUnitPath  = "/org/freedesktop/systemd1/unit/"
	errUnitExists    = "org.freedesktop.systemd1.UnitExists"
	errNoSuchUnit    = "org.freedesktop.systemd1.NoSuchUnit"
	errNoSuchMachine = "org.freedesktop.machine1.NoSuchMachine"
)

// Booted reports whether systemd is the init system of this host, the test
// sd_booted(3) makes: /run/systemd/system exists.
func Booted() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// Available reports whether berth should use systemd: it is PID 1 and its
// manager answers on the system bus. When it is not, machined falls back to the
// cgroupfs driver and skips machined registration.
func Available(ctx context.Context) bool {
	if !Booted() {
		return false
	}
	s, err := Connect(ctx)
	if err != nil {
		return false
	}
	defer s.Close()
	_, err = s.SystemState(ctx)
	return err == nil
}

// Systemd is a connection to the system bus for talking to systemd (transient
// scopes) and systemd-machined (registration). One connection serves one process:
// the machine supervisor keeps its connection for the machine's life, because its
// bus name is the Controller of the machine's scope (see StartScope).
type Systemd struct {
	conn *dbus.Conn

	mu     sync.Mutex
	jobs   map[dbus.ObjectPath]chan string // jobs waited for, by job path
	onStop func(unit string)
	done   chan struct{}
	// owner is the unique name of systemd's connection, the only sender whose
	// JobRemoved and RequestStop signals count (see dispatch).
	owner string
}

// Connect opens a private connection to the system bus and subscribes to the
// manager's job signals.
func Connect(ctx context.Context) (*Systemd, error) {
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("systemd: connect to the system bus: %w", err)
	}
	s := &Systemd{conn: conn, jobs: map[dbus.ObjectPath]chan string{}, done: make(chan struct{})}
	// Signals are collected from now on, so that a change of systemd's owner
	// between the GetNameOwner below and the dispatcher's start is not missed.
	ch := make(chan *dbus.Signal, 64)
	conn.Signal(ch)
	fail := func(what string, err error) (*Systemd, error) {
		conn.Close()
		return nil, fmt.Errorf("systemd: %s: %w", what, err)
	}
	if err := conn.AddMatchSignalContext(ctx,
		dbus.WithMatchSender(systemdDest),
		dbus.WithMatchObjectPath(systemdPath),
		dbus.WithMatchInterface(systemdManager),
		dbus.WithMatchMember("JobRemoved")); err != nil {
		return fail("watch jobs", err)
	}
	// systemd gets a new unique name when it re-executes (daemon-reexec).
	if err := conn.AddMatchSignalContext(ctx,
		dbus.WithMatchSender(busDest),
		dbus.WithMatchInterface(busDest),
		dbus.WithMatchMember("NameOwnerChanged"),
		dbus.WithMatchArg(0, systemdDest)); err != nil {
		return fail("watch the owner of "+systemdDest, err)
	}
	if err := conn.BusObject().CallWithContext(ctx, busDest+".GetNameOwner", 0, systemdDest).Store(&s.owner); err != nil {
		return fail("find the owner of "+systemdDest, err)
	}
	// systemd emits JobRemoved only while at least one client is subscribed.
	if err := s.manager().CallWithContext(ctx, systemdManager+".Subscribe", 0).Err; err != nil {
		return fail("subscribe", err)
	}
	go s.dispatch(ch)
	return s, nil
}

// systemdOwner is the unique name of systemd's connection, as last seen.
func (s *Systemd) systemdOwner() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owner
}

// busDest is the bus driver (dbus-daemon itself). Its signals carry this very
// sender, which no client can claim.
const busDest = "org.freedesktop.DBus"

// Close closes the bus connection. Scopes this connection controls stay; their
// stop requests then fall back to systemd's own killing.
func (s *Systemd) Close() error {
	err := s.conn.Close()
	<-s.done
	return err
}

// UniqueName is this connection's unique bus name (":1.42").
func (s *Systemd) UniqueName() string {
	if names := s.conn.Names(); len(names) > 0 {
		return names[0]
	}
	return ""
}

// OnStopRequest sets the function called when systemd asks this connection, as
// the Controller of a scope it started, to stop that scope (the RequestStop
// signal, sent on `systemctl stop`, `machinectl terminate` and host shutdown).
// It runs on the connection's signal goroutine and must not block.
func (s *Systemd) OnStopRequest(f func(unit string)) {
	s.mu.Lock()
	s.onStop = f
	s.mu.Unlock()
}

// dispatch handles the connection's signals. Only systemd's count: match rules
// choose which broadcast signals the bus routes here, but any client may send a
// signal to this connection directly (the system bus allows signals from every
// user), so a RequestStop that did not come from systemd's own connection
// would let anyone on the host power a machine off. nspawn's match on the
// systemd sender does the same.
func (s *Systemd) dispatch(ch chan *dbus.Signal) {
	defer close(s.done)
	for sig := range ch {
		if sig.Name == busDest+".NameOwnerChanged" {
			var name, old, owner string
			if sig.Sender == busDest && dbus.Store(sig.Body, &name, &old, &owner) == nil && name == systemdDest {
				s.mu.Lock()
				s.owner = owner
				s.mu.Unlock()
			}
			continue
		}
		if owner := s.systemdOwner(); owner == "" || sig.Sender != owner {
			continue
		}
		switch sig.Name {
		case systemdManager + ".JobRemoved":
			var id uint32
			var job dbus.ObjectPath
			var unit, result string
			if err := dbus.Store(sig.Body, &id, &job, &unit, &result); err != nil {
				continue
			}
			s.mu.Lock()
			if w, ok := s.jobs[job]; ok {
				w <- result
				delete(s.jobs, job)
			}
			s.mu.Unlock()
		case systemdScope + ".RequestStop":
			unit, ok := unitFromPath(sig.Path)
			if !ok {
				continue
			}
			s.mu.Lock()
			f := s.onStop
			s.mu.Unlock()
			if f != nil {
				f(unit)
			}
		}
	}
}

func (s *Systemd) manager() dbus.BusObject { return s.conn.Object(systemdDest, systemdPath) }

// unitPath is the object path of a unit, as sd_bus_path_encode makes it.
func unitPath(unit string) dbus.ObjectPath {
	return dbus.ObjectPath(systemdUnitPath + sddbus.PathBusEscape(unit))
}

func unitFromPath(p dbus.ObjectPath) (string, bool) {
	enc, ok := strings.CutPrefix(string(p), systemdUnitPath)
	if !ok {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(enc); i++ {
		if enc[i] == '_' && i+2 < len(enc) {
			var c byte
			if _, err := fmt.Sscanf(enc[i+1:i+3], "%02x", &c); err == nil {
				b.WriteByte(c)
				i += 2
				continue
			}
		}
		b.WriteByte(enc[i])
	}
	return b.String(), true
}

// SystemState is the manager's state: "running", "degraded", "starting",
// "stopping" (the host is shutting down), … (`systemctl is-system-running`).
func (s *Systemd) SystemState(ctx context.Context) (string, error) {
	var v dbus.Variant
	err := s.manager().CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, systemdManager, "SystemState").Store(&v)
	if err != nil {
		return "", fmt.Errorf("systemd: system state: %w", err)
	}
	st, _ := v.Value().(string)
	return st, nil
}

// startTransient starts a transient unit in mode "fail" and waits for its start
// job's result, like nspawn's allocate_scope. A result other than "done" is an
// error.
func (s *Systemd) startTransient(ctx context.Context, unit string, props []sddbus.Property) error {
	w := make(chan string, 1)
	var job dbus.ObjectPath
	// Holding mu across the call makes the dispatcher wait with a JobRemoved that
	// arrives before we know the job's path.
	s.mu.Lock()
	aux := []sddbus.PropertyCollection{}
	err := s.manager().CallWithContext(ctx, systemdManager+".StartTransientUnit", 0, unit, "fail", props, aux).Store(&job)
	if err == nil {
		s.jobs[job] = w
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case r := <-w:
		if r != "done" {
			return fmt.Errorf("start job %s", r)
		}
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.jobs, job)
		s.mu.Unlock()
		return ctx.Err()
	}
}

// unitProperty reads one property of a loaded unit.
func (s *Systemd) unitProperty(ctx context.Context, unit, iface, name string) (any, error) {
	var v dbus.Variant
	obj := s.conn.Object(systemdDest, unitPath(unit))
	if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, iface, name).Store(&v); err != nil {
		return nil, err
	}
	return v.Value(), nil
}

// isBusError reports whether err is the D-Bus error name.
func isBusError(err error, name string) bool {
	var e dbus.Error
	if errors.As(err, &e) {
		return e.Name == name
	}
	var pe *dbus.Error
	if errors.As(err, &pe) {
		return pe.Name == name
	}
	return false
}
