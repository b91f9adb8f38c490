package units

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
)

const (
	machinedDest    = "org.freedesktop.machine1"
	machinedPath    = dbus.ObjectPath("/org/freedesktop/machine1")
	machinedManager = "org.freedesktop.machine1.Manager"
	machinedMachine = "org.freedesktop.machine1.Machine"
)

// Machine is what berth tells systemd-machined about a running machine.
type Machine struct {
	Name          string // machine name (≤ 64 characters, hostname-like)
	UUID          string // 32 hex digits, or empty
	Leader        int    // the guest's init, as a PID of the host
	RootDirectory string // the machine's root as the host sees it, or empty
	IfIndices     []int  // host-side network interfaces (the vb-NAME veth)
}

// Service is the service name berth registers machines under (machinectl
// status shows it; `machinectl list` in the SERVICE column).
const Service = "berth"

// MachineInfo is systemd-machined's view of a registered machine.
type MachineInfo struct {
	Name    string
	Service string
	Class   string
	Leader  int
	Unit    string
	State   string // "opening", "running", "closing"
}

// MachinedAvailable reports whether systemd-machined runs or can be started on
// the bus (it is bus-activated, so it may not be running yet).
func (s *Systemd) MachinedAvailable(ctx context.Context) bool {
	bus := s.conn.BusObject()
	var has bool
	if bus.CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, machinedDest).Store(&has) == nil && has {
		return true
	}
	var names []string
	if bus.CallWithContext(ctx, "org.freedesktop.DBus.ListActivatableNames", 0).Store(&names) != nil {
		return false
	}
	for _, n := range names {
		if n == machinedDest {
			return true
		}
	}
	return false
}

func (s *Systemd) machined() dbus.BusObject { return s.conn.Object(machinedDest, machinedPath) }

// RegisterMachine registers a running machine with systemd-machined
// (RegisterMachineWithNetwork, what nspawn --keep-unit does): the machine's scope
// already exists and its leader runs inside it, so machined adopts that scope as
// the machine's unit. `machinectl list/status/shell/login/poweroff` then work.
//
// A stale registration of the same name, one whose leader is dead (left behind
// when a previous supervisor or machined itself died at the wrong moment, the
// classic "machine already exists" of systemd #2809 and #5427), is removed and
// the registration retried once. A live machine of the same name is an error that
// names its service and leader.
func (s *Systemd) RegisterMachine(ctx context.Context, m Machine) error {
	id, err := uuidBytes(m.UUID)
	if err != nil {
		return fmt.Errorf("machine %q: register with systemd-machined: %w", m.Name, err)
	}
	if m.Leader <= 0 {
		return fmt.Errorf("machine %q: register with systemd-machined: invalid leader PID %d", m.Name, m.Leader)
	}
	ifindices := make([]int32, len(m.IfIndices))
	for i, x := range m.IfIndices {
		ifindices[i] = int32(x)
	}
	register := func() error {
		return s.machined().CallWithContext(ctx, machinedManager+".RegisterMachineWithNetwork", 0,
			m.Name, id, Service, "container", uint32(m.Leader), m.RootDirectory, ifindices).Err
	}
	err = register()
	if err == nil {
		return nil
	}
	old, gerr := s.MachineInfo(ctx, m.Name)
	if gerr != nil || old == nil {
		return fmt.Errorf("machine %q: register with systemd-machined: %w", m.Name, err)
	}
	if old.Leader == m.Leader {
		return nil // already registered, by an earlier attempt of ours
	}
	if alive(old.Leader) && old.State != "closing" {
		return fmt.Errorf("machine %q: systemd-machined already has a running machine of that name (service %s, leader PID %d, unit %s): stop it (machinectl terminate %s) or rename this machine",
			m.Name, old.Service, old.Leader, old.Unit, m.Name)
	}
	if err := s.dropStale(ctx, m.Name); err != nil {
		return fmt.Errorf("machine %q: remove stale systemd-machined registration (leader PID %d): %w", m.Name, old.Leader, err)
	}
	if err := register(); err != nil {
		return fmt.Errorf("machine %q: register with systemd-machined after removing a stale registration: %w", m.Name, err)
	}
	return nil
}

// dropStale removes a registration whose leader is gone and waits until machined
// has forgotten it.
func (s *Systemd) dropStale(ctx context.Context, name string) error {
	if err := s.machined().CallWithContext(ctx, machinedManager+".UnregisterMachine", 0, name).Err; err != nil && !isBusError(err, errNoSuchMachine) {
		// Unregister is refused for machines machined made itself; terminate those.
		if err := s.machined().CallWithContext(ctx, machinedManager+".TerminateMachine", 0, name).Err; err != nil && !isBusError(err, errNoSuchMachine) {
			return err
		}
	}
	for {
		info, err := s.MachineInfo(ctx, name)
		if err != nil {
			return err
		}
		if info == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// UnregisterMachine removes the machine's registration (machined keeps the
// scope: it is ours). A machine machined does not know is success, so every exit
// path of the supervisor can call it.
func (s *Systemd) UnregisterMachine(ctx context.Context, name string) error {
	err := s.machined().CallWithContext(ctx, machinedManager+".UnregisterMachine", 0, name).Err
	if err != nil && !isBusError(err, errNoSuchMachine) {
		return fmt.Errorf("machine %q: unregister from systemd-machined: %w", name, err)
	}
	return nil
}

// MachineInfo returns machined's record of the machine, or nil when it has none.
func (s *Systemd) MachineInfo(ctx context.Context, name string) (*MachineInfo, error) {
	var path dbus.ObjectPath
	if err := s.machined().CallWithContext(ctx, machinedManager+".GetMachine", 0, name).Store(&path); err != nil {
		if isBusError(err, errNoSuchMachine) {
			return nil, nil
		}
		return nil, fmt.Errorf("machine %q: systemd-machined: %w", name, err)
	}
	var props map[string]dbus.Variant
	obj := s.conn.Object(machinedDest, path)
	if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, machinedMachine).Store(&props); err != nil {
		if isBusError(err, errNoSuchMachine) || isBusError(err, "org.freedesktop.DBus.Error.UnknownObject") {
			return nil, nil
		}
		return nil, fmt.Errorf("machine %q: systemd-machined: %w", name, err)
	}
	info := &MachineInfo{Name: name}
	str := func(k string) string { v, _ := props[k].Value().(string); return v }
	info.Service, info.Class, info.Unit, info.State = str("Service"), str("Class"), str("Unit"), str("State")
	if v, ok := props["Leader"].Value().(uint32); ok {
		info.Leader = int(v)
	}
	return info, nil
}

// alive reports whether pid names a live process.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// uuidBytes turns a 32-hex-digit UUID (dashes allowed) into the 16 bytes machined
// takes; empty means "no UUID" (machined accepts an empty array).
func uuidBytes(u string) ([]byte, error) {
	if u == "" {
		return []byte{}, nil
	}
	clean := make([]byte, 0, 32)
	for i := 0; i < len(u); i++ {
		if u[i] != '-' {
			clean = append(clean, u[i])
		}
	}
	b, err := hex.DecodeString(string(clean))
	if err != nil || len(b) != 16 {
		return nil, fmt.Errorf("UUID %q is not 32 hex digits", u)
	}
	return b, nil
}
