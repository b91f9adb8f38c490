package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/cpuset"
	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/units"
)

// The cgroup drivers a Wiring names.
const (
	DriverSystemd  = "systemd"
	DriverCgroupfs = "cgroupfs"
)

// DetectDriver picks the cgroup driver for machines: systemd when systemd is
// PID 1 and answers on the system bus, else cgroupfs.
func DetectDriver() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if units.Available(ctx) {
		return DriverSystemd
	}
	return DriverCgroupfs
}

// systemdHooks adds the systemd scope driver and the systemd-machined
// registration to a supervisor's hooks. The supervisor's bus connection lives
// as long as the machine: it is the Controller of the machine's scope, so
// systemd asks it, not the guest's processes, when the scope is to stop.
func systemdHooks(ctx context.Context, h *container.Hooks, cfg container.Config, att *netconf.Attachment, log *slog.Logger) error {
	sd, err := units.Connect(ctx)
	if err != nil {
		return fmt.Errorf("machine %q: systemd driver: %w", cfg.Name, err)
	}
	d := &systemdDriver{sd: sd, runDir: cfg.RuntimeDir, stopTimeout: cfg.StopTimeout, log: log.With("machine", cfg.Name)}
	sd.OnStopRequest(d.stopRequested)
	h.Cgroups = d
	if !sd.MachinedAvailable(ctx) {
		d.log.Info("systemd-machined is not available; the machine is not registered with it")
		return nil
	}
	root := cfg.Root.Dir // an overlay root exists only inside the payload's mount namespace
	var ifname string
	if att != nil {
		ifname = att.HostIf
		if ifname == "" {
			ifname = netconf.HostIfName(cfg.Name)
		}
	}
	started, stopped := h.Started, h.Stopped
	h.Started = func(ctx context.Context, s container.Started) error {
		if started != nil {
			if err := started(ctx, s); err != nil {
				return err
			}
		}
		m := units.Machine{Name: cfg.Name, UUID: cfg.UUID, Leader: s.LeaderPID, RootDirectory: root}
		if ifname != "" {
			if ifc, err := net.InterfaceByName(ifname); err == nil {
				m.IfIndices = []int{ifc.Index}
			}
		}
		// Every boot registers: after a guest reboot the old registration's leader
		// is dead, and RegisterMachine replaces such a stale entry.
		return sd.RegisterMachine(ctx, m)
	}
	h.Stopped = func(ctx context.Context, st container.ExitStatus) {
		// On every exit path: a registration left behind blocks the name (#2809).
		if err := sd.UnregisterMachine(ctx, cfg.Name); err != nil {
			d.log.Warn("unregister from systemd-machined", "err", err)
		}
		if stopped != nil {
			stopped(ctx, st)
		}
	}
	return nil
}

// BootHooks gives a foreground supervisor (berth boot) what a detached one
// gets: when systemd runs this host, the machine's own scope (the berth
// process moves into it, as nspawn without --keep-unit does) and registration
// with systemd-machined. Without systemd it changes nothing.
func BootHooks(ctx context.Context, h *container.Hooks, cfg container.Config) error {
	if DetectDriver() != DriverSystemd {
		return nil
	}
	log := slog.Default()
	if h.Logger != nil {
		log = h.Logger
	}
	return systemdHooks(ctx, h, cfg, nil, log)
}

// systemdDriver is container.CgroupDriver on top of units' transient scopes.
type systemdDriver struct {
	sd          *units.Systemd
	runDir      string
	stopTimeout time.Duration
	log         *slog.Logger

	mu         sync.Mutex
	unit       string
	destroying bool
}

func (d *systemdDriver) Name() string { return "systemd" }

func (d *systemdDriver) Create(ctx context.Context, m container.CgroupMachine) (container.Cgroup, error) {
	res, err := unitsResources(m.Resources)
	if err != nil {
		return container.Cgroup{}, fmt.Errorf("machine %q: %w", m.Name, err)
	}
	sc := units.Scope{
		Machine: m.Name, Description: m.Description, PIDs: []int{m.PID},
		Resources: res, StopTimeout: d.stopTimeout,
	}
	for _, r := range m.Devices {
		sc.DeviceAllow = append(sc.DeviceAllow, units.DeviceAllow{Path: r.Unit, Access: "rwm"})
	}
	unit, cgroup, err := d.sd.StartScope(ctx, sc)
	if err != nil {
		return container.Cgroup{}, err
	}
	d.mu.Lock()
	d.unit = unit
	d.mu.Unlock()
	cg := container.Cgroup{Path: cgroup}
	if m.Devices != nil {
		cg.DeviceFence = "systemd DevicePolicy=closed on " + unit
	}
	return cg, nil
}

func (d *systemdDriver) Update(ctx context.Context, name, _ string, r container.Resources) error {
	res, err := unitsResources(r)
	if err != nil {
		return fmt.Errorf("machine %q: %w", name, err)
	}
	return d.sd.SetResources(ctx, units.ScopeName(name), res)
}

// Destroy runs after the payload is gone. Normally the supervisor has moved
// itself back out of the scope by then (container's restoreCgroups), so the scope
// is empty: stopping it makes sure it is gone and waits for that. When the move
// failed (its old cgroup, berthd.service's, is gone at host shutdown) the
// supervisor is still inside: waiting for the scope would wait for ourselves, and
// the scope ends on its own when we exit (CollectMode collects it).
func (d *systemdDriver) Destroy(ctx context.Context, name, path string) error {
	d.mu.Lock()
	d.destroying = true
	d.mu.Unlock()
	defer d.sd.Close()
	if inCgroup(path) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return d.sd.StopScope(ctx, units.ScopeName(name))
}

// inCgroup reports whether this process is in the cgroup path or below it, in
// any hierarchy.
func inCgroup(path string) bool {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil || path == "" {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (parts[2] == path || strings.HasPrefix(parts[2], path+"/")) {
			return true
		}
	}
	return false
}

// SystemdStop is RUN/machines/NAME/systemd-stop.json: written by the
// supervisor when systemd asked it to stop the machine (systemctl stop of the
// scope, machinectl terminate, or the host shutting down). berthd reads it when
// the machine has exited to tell "a stock tool stopped it" (hold it, like berth
// stop) from "the host is going down" (keep it declared running, so it starts
// again at boot). See docs/systemd.md.
type SystemdStop struct {
	At           time.Time `json:"at"`
	Unit         string    `json:"unit"`
	HostShutdown bool      `json:"hostShutdown"`
}

// ReadSystemdStop returns the machine's systemd stop request, or nil if systemd
// did not ask it to stop.
func ReadSystemdStop(d rundir.Dir) (*SystemdStop, error) {
	b, err := os.ReadFile(d.SystemdStop())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s SystemdStop
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", d.SystemdStop(), err)
	}
	return &s, nil
}

// stopRequested handles RequestStop for the machine's scope: record why, then
// power the guest off cleanly through the supervisor's own control socket (the
// same path as berth stop), within the stop timeout; systemd's TimeoutStopSec is
// longer, so its SIGKILL never has to fire.
func (d *systemdDriver) stopRequested(unit string) {
	d.mu.Lock()
	skip := d.destroying || unit != d.unit
	d.mu.Unlock()
	if skip {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		state, _ := d.sd.SystemState(ctx)
		req := SystemdStop{At: time.Now().UTC(), Unit: unit, HostShutdown: state == "stopping"}
		d.log.Info("systemd asked to stop the machine", "unit", unit, "host_shutdown", req.HostShutdown)
		if b, err := json.Marshal(req); err == nil {
			if err := fsutil.WriteFileAtomic(rundir.Dir(d.runDir).SystemdStop(), append(b, '\n'), 0o600); err != nil {
				d.log.Warn("record systemd stop request", "err", err)
			}
		}
		// A clean poweroff with the machine's stop timeout, after which the
		// supervisor kills what is left (and still unregisters and cleans up);
		// systemd's own TimeoutStopSec is longer and never has to fire.
		c, err := container.Dial(d.runDir)
		if err == nil {
			err = c.Terminate(ctx)
		}
		if err != nil {
			d.log.Warn("poweroff on systemd's stop request", "err", err)
		}
	}()
}

// unitsResources converts r for the scope. Its devices and CPUs are checked on
// this host first (systemd would only log a device it cannot find and leave
// it unlimited): the error names the field and the device or CPU.
func unitsResources(r container.Resources) (units.Resources, error) {
	if err := container.CheckPlacement(r); err != nil {
		return units.Resources{}, err
	}
	u := units.Resources{MemoryMax: r.MemoryMax, MemoryHigh: r.MemoryHigh, CPUs: r.CPUs,
		CPUWeight: r.CPUWeight, PidsMax: r.PidsMax, IOWeight: r.IOWeight}
	for _, l := range r.IO {
		u.IO = append(u.IO, units.IOLimit{Device: l.Device, ReadBps: l.ReadBps, WriteBps: l.WriteBps,
			ReadIOPS: l.ReadIOPS, WriteIOPS: l.WriteIOPS})
	}
	if r.CPUSet != "" {
		cpus, err := cpuset.Parse(r.CPUSet)
		if err != nil {
			return units.Resources{}, fmt.Errorf("resources.cpuset: %w", err)
		}
		u.CPUSet = cpus
	}
	return u, nil
}
