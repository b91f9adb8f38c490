package host

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/userns"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/plan"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
	"github.com/berthd/berth/supervisor"
)

// Observe reads the host: the machines' supervisors, roots and links, the
// image store, the networks and berth's rules. It changes nothing.
func (h *Host) Observe(ctx context.Context, d *spec.Set) (*plan.Observed, error) {
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
	w      *record
	drift  bool
	exited *api.ExitInfo
}

// observeMachines reads every machine's runtime directory, a few at a time
// (each running machine's veth is checked from both ends, which means
// entering its network namespace; each worker has its own netlink handles),
// and returns the attachments of the running ones.
func (h *Host) observeMachines(ctx context.Context, o *plan.Observed) (map[string]*netconf.Attachment, error) {
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
func (h *Host) observeMachine(ctx context.Context, d rundir.Dir, booted time.Time, wnh **netconf.Host) *observed {
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
	if r.w, err = readRecord(d); err != nil || r.w.Attachment == nil || st.LeaderPID == 0 {
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
	om.Health, om.NotifyStatus = apiHealth(r.st.Health), r.st.Status
	if u := r.st.Users; u != nil {
		om.Users = &api.Users{Base: u.Base, Size: u.Size, Root: "idmapped"}
		if u.Shifted {
			om.Users.Root, om.Users.Why = "shifted", u.Why
		}
	}
	if r.w == nil {
		return
	}
	om.Spec = r.w.Spec
	if om.Spec != nil && om.Spec.Root.Ephemeral {
		om.RootStrategy, om.RootImage = string(rootfs.StrategyEphemeral), om.Spec.Image
	}
	if a := r.w.Attachment; a != nil {
		for _, p := range []netip.Prefix{a.Addr4, a.Addr6} {
			if p.IsValid() {
				om.Addresses = append(om.Addresses, p.Addr().String())
			}
		}
	}
}

// observeStore reads the machine roots and the images.
func (h *Host) observeStore(o *plan.Observed) error {
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
		if om.RootStrategy == string(rootfs.StrategyEphemeral) {
			// Running ephemeral: status shows that; the root kept under
			// its name (from a persistent past) still counts for prune.
			om.HasRoot = true
			continue
		}
		om.HasRoot, om.RootImage, om.RootDigest, om.RootStrategy, om.RootPath = true, r.Image, r.Digest, string(r.Strategy), r.Path
	}
	ranges, err := h.users.All()
	if err != nil {
		return err
	}
	for name, r := range ranges {
		if om := o.Machines[name]; om != nil && om.Users == nil && !om.Running {
			om.Users = &api.Users{Base: r.Base, Size: userns.Size}
		}
	}
	imgs, err := h.images.Images()
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	refs := map[string]string{}
	for _, i := range imgs {
		o.Images[i.Name] = plan.ObservedImage{Name: i.Name, Digest: i.Digest, SpecHash: i.SpecHash}
		if i.Ref != "" {
			refs[i.Digest] = i.Ref
		}
	}
	for _, om := range o.Machines {
		om.RootRef = refs[om.RootDigest]
	}
	return nil
}

// observeNetworks reads the declared networks' bridges and those of networks
// berth made that are no longer declared.
func (h *Host) observeNetworks(ctx context.Context, nh *netconf.Host, d *spec.Set, o *plan.Observed) {
	for _, n := range d.Networks {
		drift, err := nh.BridgeDrift(ctx, bridgeOf(n))
		present, _ := nh.BridgeExists(ctx, n.Bridge)
		on := plan.ObservedNetwork{Name: n.Name, Bridge: n.Bridge, Present: present, Correct: err == nil && len(drift) == 0, Drift: drift}
		if err != nil {
			on.Drift = append(on.Drift, err.Error())
		}
		if rc := resolverConfig(h.paths.RuntimeDir, n); rc != nil {
			on.Drift = append(on.Drift, supervisor.ResolverDrift(h.paths.RuntimeDir, *rc)...)
		} else if supervisor.ResolverRunning(h.paths.RuntimeDir, n.Name) {
			on.Drift = append(on.Drift, fmt.Sprintf("the DNS resolver of network %s runs, but the network has it off", n.Name))
		}
		on.Correct = on.Correct && len(on.Drift) == 0
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
