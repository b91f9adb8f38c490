// Package host is the reconciler's hands on this machine: it observes the
// machines (their supervisors, roots, links and rules) and carries out each kind
// of action through the leaf packages: rootfs for images and roots, netconf for
// bridges, links and nftables, supervisor and container for the machines
// themselves. Nothing here decides; the plan does.
package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/userns"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/machined/events"
	"github.com/berthd/berth/machined/plan"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
	"github.com/berthd/berth/supervisor"
)

// Host is the real machined.Host: the container, rootfs, netconf (and, on systemd
// hosts, units) packages acting on this machine.
type Host struct {
	paths  config.Paths
	images *rootfs.Store
	leases *netconf.Leases
	users  *userns.Store // the machines' ranges of host IDs
	driver string        // "systemd" or "cgroupfs": which the supervisors use
	events *events.Log   // where long work reports progress (image builds)

	netMu sync.Mutex // one netlink/nftables change at a time
}

// Open opens the stores under the state directory.
func Open(p config.Paths) (*Host, error) {
	for _, d := range []string{p.StateDir, p.RuntimeDir, p.LogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	images, err := rootfs.Open(p.StateDir)
	if err != nil {
		return nil, err
	}
	leases, err := netconf.OpenLeases(filepath.Join(p.StateDir, "network"))
	if err != nil {
		return nil, err
	}
	return &Host{paths: p, images: images, leases: leases, users: userns.Open(p.StateDir), driver: supervisor.DetectDriver()}, nil
}

func (h *Host) DriverName() string { return h.driver }

func (h *Host) UseEvents(l *events.Log) { h.events = l }

// withNet runs fn with a netlink/nftables handle on the host's network
// namespace, one change at a time.
func (h *Host) withNet(fn func(nh *netconf.Host) error) error {
	h.netMu.Lock()
	defer h.netMu.Unlock()
	nh, err := netconf.Open("")
	if err != nil {
		return err
	}
	defer nh.Close()
	return fn(nh)
}

func (h *Host) runDir(name string) string {
	return rundir.For(h.paths.RuntimeDir, name).Path()
}

// StartMachine makes the root if needed, attaches the network and starts a
// detached supervisor.
func (h *Host) StartMachine(ctx context.Context, d *spec.Set, m *spec.Machine) error {
	root, err := h.machineRoot(ctx, m)
	if err != nil {
		return fmt.Errorf("machine %q: root: %w", m.Name, err)
	}
	for _, mt := range m.Mounts {
		if mt.Type == spec.MountBind && mt.Create {
			if err := os.MkdirAll(mt.Source, 0o755); err != nil {
				return fmt.Errorf("machine %q: mount source %s: %w", m.Name, mt.Source, err)
			}
		}
	}
	if rc := resolvConf(d, m, m.Network.Private() && supervisor.ResolverRunning(h.paths.RuntimeDir, m.Network.Name)); rc != nil {
		// A machine without name servers still boots: warn rather than fail.
		logErr(ctx, "cannot write the guest's /etc/resolv.conf", m.Name, writeResolvConf(root, *rc))
	}
	cfg := containerConfig(h.paths, m, root)
	if img, err := h.images.ImageOf(root); err == nil {
		if err := imageDefaults(&cfg, m, img, root.Stack()); err != nil {
			return fmt.Errorf("machine %q: %w", m.Name, err)
		}
	}
	if cfg.Users, err = h.machineUsers(ctx, m); err != nil {
		return err
	}
	if m.Root.Ephemeral {
		ephemeralConfig(&cfg, m)
	}
	if err := h.provision(ctx, m); err != nil {
		return err
	}
	w := &record{Wiring: supervisor.Wiring{StateDir: h.paths.StateDir, Driver: h.driver}, Spec: m}
	if m.Root.Ephemeral {
		w.EphemeralImage = root.Digest
	}
	if m.Network.Private() {
		att, err := h.attachment(d, m)
		if err != nil {
			return err
		}
		w.Attachment, w.Network, w.Forwards = att, m.Network.Name, machineForwards(m, att)
	}
	if cfg.Credentials, err = writeCredentials(cfg.RuntimeDir, m); err != nil {
		return err
	}
	if err := supervisor.Spawn(ctx, cfg, w); err != nil {
		_ = os.RemoveAll(rundir.Dir(cfg.RuntimeDir).Credentials())
		return err
	}
	return nil
}

// machineUsers gives a machine with private users its recorded range of
// host IDs and readies its root for it (idmapped, or shifted once where its
// filesystem cannot idmap); a machine without shifts a root shifted before
// back to the owners it was made with.
func (h *Host) machineUsers(ctx context.Context, m *spec.Machine) (*container.Users, error) {
	idmap := rootfs.IdmapOptional
	if m.Security.Idmap == spec.Required {
		idmap = rootfs.IdmapRequired
	}
	if m.Root.Ephemeral {
		return h.ephemeralUsers(m)
	}
	if !m.PrivateUsers.Private() {
		if _, err := h.images.PrepareUsers(ctx, m.Name, 0, idmap); err != nil {
			return nil, fmt.Errorf("machine %q: root: %w", m.Name, err)
		}
		return nil, nil
	}
	base, pinned := m.PrivateUsers.Pinned()
	r, err := h.users.Assign(m.Name, base, pinned)
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", m.Name, err)
	}
	u, err := h.images.PrepareUsers(ctx, m.Name, r.Base, idmap)
	if err != nil {
		return nil, fmt.Errorf("machine %q: root: %w", m.Name, err)
	}
	return &container.Users{Base: r.Base, Size: userns.Size, Shifted: u.Shifted, Why: u.Why}, nil
}

func (h *Host) StopMachine(ctx context.Context, name string, terminate bool) (*api.ExitInfo, error) {
	dir := h.runDir(name)
	st, _ := container.ReadState(dir)
	c, err := container.Dial(dir)
	if errors.Is(err, container.ErrNotRunning) {
		return nil, nil // already stopped is success
	}
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", name, err)
	}
	if terminate {
		// At once, as machinectl terminate: every process of the machine.
		err = c.Kill(ctx, syscall.SIGKILL, "all")
	} else {
		// A clean poweroff; what is left after the stop timeout is killed.
		err = c.Terminate(ctx)
	}
	if err != nil && !errors.Is(err, container.ErrNotRunning) {
		return nil, fmt.Errorf("machine %q: %w", name, err)
	}
	ex, err := c.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", name, err)
	}
	return &api.ExitInfo{Code: ex.Code, Reason: ex.String(), Time: time.Now(), Started: st.StartedAt}, nil
}

// Forget marks the machine's exit as handled: state.json becomes
// state.last.json, kept (with supervisor.log) for a post-mortem but no longer
// an exit to handle, and whatever a killed supervisor left mounted on the
// host is removed. The supervisor may still be
// removing its cgroup: it is given a moment to finish first.
func (h *Host) Forget(name string) {
	dir := h.runDir(name)
	_ = container.WaitSupervisorGone(context.Background(), dir, 5*time.Second)
	if st, err := container.ReadState(dir); err == nil && st.SupervisorAlive() && st.Phase != container.PhaseExited {
		return // started again meanwhile
	}
	// A supervisor that was killed left its propagation directory mounted
	// on the host (binds into the machine arrive through it).
	container.RemovePropagation(name)
	h.forgetEphemeral(name)
	_ = os.Rename(rundir.Dir(dir).State(), rundir.Dir(dir).HandledState())
}

func (h *Host) UpdateMachine(ctx context.Context, m *spec.Machine) error {
	dir := h.runDir(m.Name)
	c, err := container.Dial(dir)
	if err != nil {
		return fmt.Errorf("machine %q: %w", m.Name, err)
	}
	if err := c.Update(ctx, containerResources(m.Resources)); err != nil {
		return fmt.Errorf("machine %q: update limits: %w", m.Name, err)
	}
	// The running machine now matches the definition in everything that needs no
	// restart; record it so the next plan compares against it.
	w, err := readRecord(rundir.Dir(dir))
	if err != nil {
		return err
	}
	live := plan.LiveUpdated(w.Spec, m)
	w.Spec = &live
	return supervisor.WriteWiring(rundir.Dir(dir), w)
}

func (h *Host) RepairMachine(ctx context.Context, d *spec.Set, m *spec.Machine) error {
	dir := h.runDir(m.Name)
	st, err := container.ReadState(dir)
	if err != nil {
		return err
	}
	w, err := supervisor.ReadWiring(rundir.Dir(dir))
	if err != nil {
		return err
	}
	if w.Attachment == nil || st.LeaderPID == 0 || !st.SupervisorAlive() || st.Phase == container.PhaseExited {
		return nil // nothing to repair: the machine is gone, its exit is handled apart
	}
	return h.withNet(func(nh *netconf.Host) error { return nh.Attach(ctx, st.LeaderPID, *w.Attachment) })
}

func (h *Host) RemoveRoot(ctx context.Context, name string) error {
	if _, err := h.images.RemoveRoot(name, true); err != nil && !errors.Is(err, rootfs.ErrNotFound) {
		return err
	}
	leases, _ := h.leases.Leases()
	for _, l := range leases {
		if l.Machine == name {
			_ = h.leases.Release(l.Network, name)
		}
	}
	// Its files are gone: the range may go to another machine.
	return h.users.Release(name)
}

func (h *Host) Wait(ctx context.Context, name string) (api.ExitInfo, error) {
	dir := h.runDir(name)
	st, _ := container.ReadState(dir)
	c, err := container.Dial(dir)
	var ex container.ExitStatus
	if err == nil {
		ex, err = c.Wait(ctx)
	}
	if err != nil {
		// The supervisor is gone: its last state says how the machine ended.
		st2, rerr := container.ReadState(dir)
		if rerr != nil || st2.Exit == nil {
			return api.ExitInfo{Code: 1, Reason: "supervisor vanished", Time: time.Now(), Started: st.StartedAt}, nil
		}
		ex = *st2.Exit
	}
	return api.ExitInfo{Code: ex.Code, Reason: ex.String(), Time: time.Now(), Started: st.StartedAt, StoppedBy: stoppedBy(dir, st.StartedAt)}, nil
}

// stoppedBy tells from the supervisor's record whether systemd asked the
// machine to stop (a stock tool, or the host shutting down) during the run
// that started at started: a request of an earlier run of the same machine
// says nothing about this one.
func stoppedBy(runDir string, started time.Time) string {
	req, err := supervisor.ReadSystemdStop(rundir.Dir(runDir))
	switch {
	case err != nil || req == nil || req.At.Before(started):
		return ""
	case req.HostShutdown:
		return api.StoppedByHostShutdown
	}
	return api.StoppedBySystemd
}

func (h *Host) Signal(ctx context.Context, name string, req api.KillRequest) error {
	sig, err := parseSignal(req.Signal)
	if err != nil {
		return fmt.Errorf("%w: %v", errdefs.ErrInvalid, err)
	}
	whom := req.Whom
	if whom == "" {
		whom = "all"
	}
	if whom != "all" && whom != "leader" {
		return fmt.Errorf("kill-whom %q: want leader or all: %w", whom, errdefs.ErrInvalid)
	}
	c, err := container.Dial(h.runDir(name))
	if err != nil {
		return fmt.Errorf("machine %q is not running: %w", name, errdefs.ErrConflict)
	}
	return c.Kill(ctx, sig, whom)
}

func (h *Host) Reboot(ctx context.Context, name string) error {
	c, err := container.Dial(h.runDir(name))
	if err != nil {
		return fmt.Errorf("machine %q is not running: %w", name, errdefs.ErrConflict)
	}
	return c.Reboot(ctx)
}
