package machined

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/internal/logctx"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/machined/events"
	"github.com/berthd/berth/machined/plan"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
	"github.com/berthd/berth/supervisor"
)

// leafHost is the real Host: the container, rootfs, netconf (and, on systemd
// hosts, units) packages acting on this machine.
type leafHost struct {
	paths  config.Paths
	images *rootfs.Store
	leases *netconf.Leases
	driver string      // "systemd" or "cgroupfs": which the supervisors use
	events *events.Log // where long work reports progress (image builds)

	netMu sync.Mutex // one netlink/nftables change at a time
}

// newLeafHost opens the stores under the state directory.
func newLeafHost(p config.Paths) (*leafHost, error) {
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
	return &leafHost{paths: p, images: images, leases: leases, driver: supervisor.DetectDriver()}, nil
}

// OpenLocal returns a manager in the calling process, for CLI verbs when no
// daemon runs.
func OpenLocal(p config.Paths) (*Manager, error) {
	h, err := newLeafHost(p)
	if err != nil {
		return nil, err
	}
	cfg := &config.Config{StateDir: p.StateDir, RuntimeDir: p.RuntimeDir, LogDir: p.LogDir, Socket: p.Socket, Parallelism: 4, Resync: config.Duration(time.Minute)}
	if c, err := config.Load(config.DefaultPath); err == nil && c.StateDir == p.StateDir {
		// The one-shot manager sees the same sources as berthd would.
		cfg.Sources = c.Sources
	}
	return NewManager(cfg, h, false)
}

func (h *leafHost) DriverName() string { return h.driver }

func (h *leafHost) useEvents(l *events.Log) { h.events = l }

// withNet runs fn with a netlink/nftables handle on the host's network
// namespace, one change at a time.
func (h *leafHost) withNet(fn func(nh *netconf.Host) error) error {
	h.netMu.Lock()
	defer h.netMu.Unlock()
	nh, err := netconf.Open("")
	if err != nil {
		return err
	}
	defer nh.Close()
	return fn(nh)
}

func (h *leafHost) runDir(name string) string {
	return rundir.For(h.paths.RuntimeDir, name).Path()
}

// Observe reads the host: the machines' supervisors, roots and links, the
// image store, the networks and berth's rules. It changes nothing.
func (h *leafHost) Observe(ctx context.Context, d *spec.Set) (*plan.Observed, error) {
	o := &plan.Observed{Machines: map[string]*plan.ObservedMachine{}, Images: map[string]plan.ObservedImage{}, Networks: map[string]plan.ObservedNetwork{}}
	h.netMu.Lock()
	defer h.netMu.Unlock()
	nh, err := netconf.Open("")
	if err != nil {
		return nil, err
	}
	defer nh.Close()
	attached, err := h.observeMachines(ctx, o)
	if err != nil {
		return nil, err
	}
	if err := h.observeStore(o); err != nil {
		return nil, err
	}
	h.observeNetworks(ctx, nh, d, o)
	drift, err := nh.RulesDrift(ctx, ruleset(d, attached))
	if err != nil {
		drift = append(drift, err.Error())
	}
	o.RulesCurrent, o.RulesDrift = len(drift) == 0, drift
	return o, nil
}

// observed is what observeMachine saw of one machine's runtime directory.
type observed struct {
	st     container.State
	w      *supervisor.Wiring
	drift  bool
	exited *api.ExitInfo
}

// observeMachines reads every machine's runtime directory, a few at a time
// (each running machine's veth is checked from both ends, which means
// entering its network namespace; each worker has its own netlink handles),
// and returns the attachments of the running ones.
func (h *leafHost) observeMachines(ctx context.Context, o *plan.Observed) (map[string]*netconf.Attachment, error) {
	ents, err := os.ReadDir(filepath.Join(h.paths.RuntimeDir, rundir.MachinesDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() && rundir.CheckName(e.Name()) == nil {
			names = append(names, e.Name())
		}
	}
	booted := hostBootTime()
	results := make([]*observed, len(names))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(4, len(names)) {
		wg.Go(func() {
			var wnh *netconf.Host
			defer func() {
				if wnh != nil {
					wnh.Close()
				}
			}()
			for i := range next {
				results[i] = h.observeMachine(ctx, rundir.Dir(h.runDir(names[i])), booted, &wnh)
			}
		})
	}
	for i := range names {
		next <- i
	}
	close(next)
	wg.Wait()
	attached := map[string]*netconf.Attachment{}
	for i, r := range results {
		if r == nil {
			continue
		}
		om := &plan.ObservedMachine{Name: names[i], Exited: r.exited}
		o.Machines[names[i]] = om
		if r.exited == nil {
			fillRunning(om, r)
			if r.w != nil && r.w.Attachment != nil {
				attached[names[i]] = r.w.Attachment
			}
		}
	}
	return attached, nil
}

// observeMachine reads one machine's runtime directory: nil when nothing
// runs there and nothing is left to handle. A supervisor that ended while
// berthd was not running left an exit to handle; one from before the host's
// last boot ended with that boot, with nothing to handle: the machine simply
// starts again.
func (h *leafHost) observeMachine(ctx context.Context, d rundir.Dir, booted time.Time, wnh **netconf.Host) *observed {
	st, err := container.ReadState(d.Path())
	if err != nil {
		return nil
	}
	if !st.SupervisorAlive() {
		fi, err := os.Stat(d.State())
		if err != nil || !fi.ModTime().After(booted) {
			return nil
		}
		ex := api.ExitInfo{Code: 1, Reason: "supervisor vanished", Time: fi.ModTime(), Started: st.StartedAt, StoppedBy: stoppedBy(d.Path(), st.StartedAt)}
		if st.Exit != nil {
			ex.Code, ex.Reason = st.Exit.Code, st.Exit.String()
		}
		return &observed{exited: &ex}
	}
	// A supervisor still tidying up after its machine ended does not count as
	// running: the machine is gone.
	if st.Phase == container.PhaseExited {
		return nil
	}
	r := &observed{st: st}
	if r.w, err = supervisor.ReadWiring(d); err != nil || r.w.Attachment == nil || st.LeaderPID == 0 {
		return r
	}
	if *wnh == nil {
		if *wnh, err = netconf.Open(""); err != nil {
			return r
		}
	}
	if drift, err := (*wnh).AttachmentDrift(ctx, st.LeaderPID, *r.w.Attachment); err == nil && len(drift) > 0 {
		r.drift = true
	}
	return r
}

// fillRunning is what berth status shows of a running machine.
func fillRunning(om *plan.ObservedMachine, r *observed) {
	om.Running, om.Phase, om.LinkMissing = true, r.st.Phase, r.drift
	om.Since, om.ReadySince = r.st.StartedAt, r.st.ReadyAt
	om.SupervisorPID, om.LeaderPID = r.st.SupervisorPID, r.st.LeaderPID
	om.Cgroup, om.Driver = r.st.CgroupPath, r.st.Driver
	om.Seccomp, om.DeviceFence = r.st.Seccomp, r.st.DeviceFence
	if r.w == nil {
		return
	}
	om.Spec = r.w.Spec
	if a := r.w.Attachment; a != nil {
		for _, p := range []netip.Prefix{a.Addr4, a.Addr6} {
			if p.IsValid() {
				om.Addresses = append(om.Addresses, p.Addr().String())
			}
		}
	}
}

// observeStore reads the machine roots and the images.
func (h *leafHost) observeStore(o *plan.Observed) error {
	roots, err := h.images.Roots()
	if err != nil {
		return fmt.Errorf("machine roots: %w", err)
	}
	for _, r := range roots {
		om := o.Machines[r.Machine]
		if om == nil {
			om = &plan.ObservedMachine{Name: r.Machine}
			o.Machines[r.Machine] = om
		}
		om.HasRoot, om.RootImage, om.RootDigest, om.RootStrategy, om.RootPath = true, r.Image, r.Digest, string(r.Strategy), r.Path
	}
	imgs, err := h.images.Images()
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	for _, i := range imgs {
		o.Images[i.Name] = plan.ObservedImage{Name: i.Name, Digest: i.Digest, SpecHash: i.SpecHash}
	}
	return nil
}

// observeNetworks reads the declared networks' bridges and those of networks
// berth made that are no longer declared.
func (h *leafHost) observeNetworks(ctx context.Context, nh *netconf.Host, d *spec.Set, o *plan.Observed) {
	for _, n := range d.Networks {
		drift, err := nh.BridgeDrift(ctx, bridgeOf(n))
		present, _ := nh.BridgeExists(ctx, n.Bridge)
		on := plan.ObservedNetwork{Name: n.Name, Bridge: n.Bridge, Present: present, Correct: err == nil && len(drift) == 0, Drift: drift}
		if err != nil {
			on.Drift = append(on.Drift, err.Error())
		}
		o.Networks[n.Name] = on
	}
	known, _ := h.knownNetworks()
	for name, bridge := range known {
		if _, ok := o.Networks[name]; ok {
			continue
		}
		if present, err := nh.BridgeExists(ctx, bridge); err == nil && present {
			o.Networks[name] = plan.ObservedNetwork{Name: name, Bridge: bridge, Present: true}
		}
	}
}

// hostBootTime is when the host booted (btime of /proc/stat); the zero time
// when unknown.
func hostBootTime() time.Time {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(n, 0)
			}
		}
	}
	return time.Time{}
}

// knownNetworks are the networks berth made on this host (name → bridge), kept
// so that one no longer declared can be removed.
func (h *leafHost) knownNetworks() (map[string]string, error) {
	out := map[string]string{}
	b, err := os.ReadFile(filepath.Join(h.paths.StateDir, "berthd", "networks"))
	if err != nil {
		return out, err
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 {
			out[f[0]] = f[1]
		}
	}
	return out, nil
}

func (h *leafHost) setKnownNetwork(name, bridge string) error {
	known, _ := h.knownNetworks()
	if bridge == "" {
		delete(known, name)
	} else {
		known[name] = bridge
	}
	var lines []string
	for n, b := range known {
		lines = append(lines, n+" "+b)
	}
	slices.Sort(lines)
	dir := filepath.Join(h.paths.StateDir, "berthd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, "networks"), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

func (h *leafHost) EnsureNetwork(ctx context.Context, n *spec.Network) error {
	if n == nil {
		return fmt.Errorf("network: %w", errdefs.ErrNotFound)
	}
	if err := h.setKnownNetwork(n.Name, n.Bridge); err != nil {
		return err
	}
	return h.withNet(func(nh *netconf.Host) error { return nh.EnsureBridge(ctx, bridgeOf(n)) })
}

func (h *leafHost) RemoveNetwork(ctx context.Context, name string) error {
	known, _ := h.knownNetworks()
	bridge := known[name]
	if bridge == "" {
		return nil
	}
	// The veths of machines that just stopped go away with their network
	// namespaces, which the kernel tears down a moment later (asynchronously):
	// a bridge that still has ports is given a few seconds.
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		err = h.withNet(func(nh *netconf.Host) error { return nh.DeleteBridge(ctx, bridge) })
		if !errors.Is(err, netconf.ErrBusy) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil && !errors.Is(err, netconf.ErrNotFound) {
		return err
	}
	_ = h.leases.ReleaseNetwork(name)
	return h.setKnownNetwork(name, "")
}

func (h *leafHost) BuildImage(ctx context.Context, img *spec.Image) error {
	if img == nil {
		return fmt.Errorf("image: %w", errdefs.ErrNotFound)
	}
	src, err := ImageSource(img)
	if err != nil {
		return err
	}
	_, err = h.images.Import(ctx, img.Name, src, rootfs.ImportOptions{SpecHash: img.Hash(), Progress: progressReporter(ctx, img.Name, h.events)})
	return err
}

// ImageSource maps an Image definition to the image store's source.
func ImageSource(img *spec.Image) (rootfs.Source, error) {
	switch {
	case img.Directory != "":
		return rootfs.Dir{Path: img.Directory}, nil
	case img.Tar != nil:
		loc := img.Tar.Path
		if loc == "" {
			loc = img.Tar.URL
		}
		return rootfs.Tar{Location: loc, SHA256: img.Tar.SHA256}, nil
	case img.Debootstrap != nil:
		db := img.Debootstrap
		return rootfs.Debootstrap{Suite: db.Suite, Mirror: db.Mirror, Variant: db.Variant, Packages: db.Packages}, nil
	}
	return nil, fmt.Errorf("image %q: no source", img.Name)
}

// addresses allocates (or finds again) the machine's addresses on its network.
func (h *leafHost) attachment(d *spec.Set, m *spec.Machine) (*netconf.Attachment, error) {
	n := d.Network(m.Network.Name)
	if n == nil {
		return nil, fmt.Errorf("machine %q: network %q is not declared", m.Name, m.Network.Name)
	}
	// Other machines' static addresses are reserved even before they start.
	var reserved4, reserved6 []netip.Addr
	for _, o := range d.Machines {
		if o.Name == m.Name || o.Network.Name != n.Name {
			continue
		}
		if o.Network.Address.IsValid() {
			reserved4 = append(reserved4, o.Network.Address.Addr())
		}
		if o.Network.Address6.IsValid() {
			reserved6 = append(reserved6, o.Network.Address6.Addr())
		}
	}
	a := &netconf.Attachment{Machine: m.Name, Bridge: n.Bridge, HostIf: netconf.HostIfName(m.Name), Guarded: m.Network.Guarded()}
	if m.Network.MAC != "" {
		mac, err := parseMAC(m.Network.MAC)
		if err != nil {
			return nil, fmt.Errorf("machine %q: network.mac: %w", m.Name, err)
		}
		a.MAC = mac
	}
	reqs := []netconf.AddrRequest{{Subnet: n.Subnet, Gateway: n.Gateway}}
	if m.Network.Address.IsValid() {
		reqs[0].Static = m.Network.Address.Addr()
	}
	if n.Subnet6.IsValid() {
		r6 := netconf.AddrRequest{Subnet: n.Subnet6, Gateway: n.Gateway6}
		if m.Network.Address6.IsValid() {
			r6.Static = m.Network.Address6.Addr()
		}
		reqs = append(reqs, r6)
	}
	// Both families in one locked write: the machine gets all its addresses or none.
	addrs, err := h.leases.AllocateAll(n.Name, m.Name, reqs, append(reserved4, reserved6...)...)
	if err != nil {
		return nil, err
	}
	a.Addr4, a.Gateway4 = addrs[0], n.Gateway
	if len(addrs) > 1 {
		a.Addr6, a.Gateway6 = addrs[1], n.Gateway6
	}
	return a, nil
}

// StartMachine makes the root if needed, attaches the network and starts a
// detached supervisor.
func (h *leafHost) StartMachine(ctx context.Context, d *spec.Set, m *spec.Machine) error {
	root, err := h.images.Root(m.Name)
	if errors.Is(err, rootfs.ErrNotFound) {
		root, err = h.images.CreateRoot(ctx, m.Name, m.Image, rootfs.Strategy(m.Root.Strategy))
	}
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
	if rc := resolvConf(d, m); rc != nil {
		// A machine without name servers still boots: warn rather than fail.
		logErr(ctx, "cannot write the guest's /etc/resolv.conf", m.Name, writeResolvConf(root, *rc))
	}
	cfg := containerConfig(h.paths, m, root)
	w := &supervisor.Wiring{Spec: m, StateDir: h.paths.StateDir, Driver: h.driver}
	if m.Network.Private() {
		att, err := h.attachment(d, m)
		if err != nil {
			return err
		}
		w.Attachment, w.Network, w.Forwards = att, m.Network.Name, machineForwards(m, att)
	}
	return supervisor.Spawn(ctx, cfg, w)
}

func (h *leafHost) StopMachine(ctx context.Context, name string, terminate bool) (*api.ExitInfo, error) {
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
// an exit to handle. The supervisor may still be
// removing its cgroup: it is given a moment to finish first.
func (h *leafHost) Forget(name string) {
	dir := h.runDir(name)
	_ = container.WaitSupervisorGone(context.Background(), dir, 5*time.Second)
	if st, err := container.ReadState(dir); err == nil && st.SupervisorAlive() && st.Phase != container.PhaseExited {
		return // started again meanwhile
	}
	_ = os.Rename(rundir.Dir(dir).State(), rundir.Dir(dir).HandledState())
}

func (h *leafHost) UpdateMachine(ctx context.Context, m *spec.Machine) error {
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
	w, err := supervisor.ReadWiring(rundir.Dir(dir))
	if err != nil {
		return err
	}
	live := plan.LiveUpdated(w.Spec, m)
	w.Spec = &live
	return supervisor.WriteWiring(rundir.Dir(dir), w)
}

func (h *leafHost) RepairMachine(ctx context.Context, d *spec.Set, m *spec.Machine) error {
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

func (h *leafHost) RemoveRoot(ctx context.Context, name string) error {
	if _, err := h.images.RemoveRoot(name, true); err != nil && !errors.Is(err, rootfs.ErrNotFound) {
		return err
	}
	leases, _ := h.leases.Leases()
	for _, l := range leases {
		if l.Machine == name {
			_ = h.leases.Release(l.Network, name)
		}
	}
	return nil
}

func (h *leafHost) ApplyRules(ctx context.Context, d *spec.Set) error {
	attached := map[string]*netconf.Attachment{}
	ents, _ := os.ReadDir(filepath.Join(h.paths.RuntimeDir, rundir.MachinesDir))
	for _, e := range ents {
		dir := h.runDir(e.Name())
		if st, err := container.ReadState(dir); err != nil || !st.SupervisorAlive() {
			continue
		}
		if w, err := supervisor.ReadWiring(rundir.Dir(dir)); err == nil && w.Attachment != nil {
			attached[e.Name()] = w.Attachment
		}
	}
	return h.withNet(func(nh *netconf.Host) error { return nh.ApplyRules(ctx, ruleset(d, attached)) })
}

func (h *leafHost) Wait(ctx context.Context, name string) (api.ExitInfo, error) {
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

func (h *leafHost) Signal(ctx context.Context, name string, req api.KillRequest) error {
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

func (h *leafHost) Reboot(ctx context.Context, name string) error {
	c, err := container.Dial(h.runDir(name))
	if err != nil {
		return fmt.Errorf("machine %q is not running: %w", name, errdefs.ErrConflict)
	}
	return c.Reboot(ctx)
}

// Describe adds the details of berth status that observe does not gather:
// resource usage from the cgroup and the console's last lines.
func (h *leafHost) Describe(ctx context.Context, st *api.MachineStatus) {
	if st.Cgroup != "" {
		if u, err := container.Usage(st.Cgroup); err == nil {
			st.Usage = map[string]any{"memory": spec.Size(u.MemoryBytes).String(), "tasks": u.Pids, "cpu": u.CPU.Round(time.Millisecond).String()}
		}
	}
	st.Console = tailLines(rundir.ConsoleLog(h.paths.LogDir, st.Name), 12)
}

func limitsMap(r spec.Resources) map[string]any {
	m := map[string]any{}
	if r.MemoryMax > 0 {
		m["memoryMax"] = r.MemoryMax.String()
	}
	if r.MemoryHigh > 0 {
		m["memoryHigh"] = r.MemoryHigh.String()
	}
	if r.CPUs > 0 {
		m["cpus"] = r.CPUs
	}
	if r.CPUWeight > 0 {
		m["cpuWeight"] = r.CPUWeight
	}
	if r.PidsMax > 0 {
		m["pidsMax"] = r.PidsMax
	}
	if r.IOWeight > 0 {
		m["ioWeight"] = r.IOWeight
	}
	return m
}

func (h *leafHost) NetworkStatus(ctx context.Context, d *spec.Set) []api.NetworkStatus {
	present := map[string]bool{}
	_ = h.withNet(func(nh *netconf.Host) error {
		for _, n := range d.Networks {
			present[n.Name], _ = nh.BridgeExists(ctx, n.Bridge)
		}
		return nil
	})
	var out []api.NetworkStatus
	for _, n := range d.Networks {
		ns := api.NetworkStatus{Name: n.Name, Bridge: n.Bridge, Subnet: n.Subnet.String(), NAT: n.Masquerade(), Machines: []string{}}
		if n.Subnet6.IsValid() {
			ns.Subnet6 = n.Subnet6.String()
		}
		if n.Gateway.IsValid() {
			ns.Gateway = n.Gateway.String()
		}
		ns.Present = present[n.Name]
		for _, m := range d.Machines {
			if m.Network.Name == n.Name {
				ns.Machines = append(ns.Machines, m.Name)
			}
		}
		out = append(out, ns)
	}
	return out
}

// tailLines returns the last n lines of a file (a console log).
func tailLines(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	const window = 16 << 10
	off := max(0, st.Size()-window)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	text := strings.ReplaceAll(string(buf), "\r", "")
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if off > 0 && len(lines) > 0 {
		lines = lines[1:] // the first is probably cut
	}
	var out []string
	for _, l := range lines {
		if l = strings.TrimSpace(stripANSI(l)); l != "" {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// stripANSI removes terminal escape sequences (systemd colours its console).
func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// progressReporter reports long image work in the daemon's log and as
// image.progress events (which `berth apply` shows while it waits), at most
// every few seconds and at each new phase.
func progressReporter(ctx context.Context, image string, events *events.Log) rootfs.ProgressFunc {
	var last time.Time
	phase := ""
	return func(p rootfs.Progress) {
		if p.Phase == phase && time.Since(last) < 3*time.Second {
			return
		}
		last, phase = time.Now(), p.Phase
		attrs := []any{"image", image, "phase", p.Phase}
		msg := "image " + image + ": " + p.Phase
		if p.Total > 0 {
			pct := p.Done * 100 / p.Total
			attrs = append(attrs, "done", fmt.Sprintf("%d%%", pct))
			msg += fmt.Sprintf(" %d%%", pct)
		}
		if p.Message != "" {
			attrs = append(attrs, "msg", p.Message)
			msg += ": " + p.Message
		}
		logctx.From(ctx).Info("building image", attrs...)
		if events != nil {
			events.Emit(api.Event{Kind: api.EvImageProgress, Image: image, Message: msg})
		}
	}
}
