package host

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/internal/logctx"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/spec"
	"github.com/berthd/berth/supervisor"
	"github.com/berthd/berth/units"
)

// knownNetworks are the networks berth made on this host (name → bridge), kept
// so that one no longer declared can be removed.
func (h *Host) knownNetworks() (map[string]string, error) {
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

func (h *Host) setKnownNetwork(name, bridge string) error {
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

func (h *Host) EnsureNetwork(ctx context.Context, n *spec.Network) error {
	if n == nil {
		return fmt.Errorf("network: %w", errdefs.ErrNotFound)
	}
	if err := h.setKnownNetwork(n.Name, n.Bridge); err != nil {
		return err
	}
	if err := h.withNet(func(nh *netconf.Host) error { return nh.EnsureBridge(ctx, bridgeOf(n)) }); err != nil {
		return err
	}
	rc := resolverConfig(h.paths.RuntimeDir, n)
	if rc == nil {
		return supervisor.StopResolver(ctx, h.paths.RuntimeDir, n.Name)
	}
	log := logctx.From(ctx).With("network", n.Name)
	if err := supervisor.EnsureResolver(ctx, h.paths.RuntimeDir, *rc, h.driver); err != nil {
		// The machines still start, without names: a resolver that cannot
		// run (port 53 taken by another DNS server) must not keep a network
		// that worked before from coming up. It stays drift, reported by
		// berth plan and retried by every reconcile.
		log.Warn("the network's DNS resolver does not run; its machines get no names", "err", err)
		return nil
	}
	if h.driver == supervisor.DriverSystemd {
		// The host finds the machines too (ping web.berth); a host without
		// systemd-resolved needs the line docs/networking.md gives.
		if err := h.resolvedLink(ctx, n.Bridge, rc); err != nil {
			log.Warn("cannot give systemd-resolved the network's DNS server", "err", err)
		}
	}
	return nil
}

// resolvedLink gives systemd-resolved, when it runs, the network's resolver
// as the DNS server of its bridge, for the network's domain.
func (h *Host) resolvedLink(ctx context.Context, bridge string, rc *netconf.ResolverConfig) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sd, err := units.Connect(ctx)
	if err != nil {
		return err
	}
	defer sd.Close()
	if !sd.ResolvedAvailable(ctx) {
		return nil
	}
	ifc, err := net.InterfaceByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %q: %w", bridge, err)
	}
	return sd.SetLinkDNS(ctx, ifc.Index, rc.Listen, rc.Domain)
}

func (h *Host) RemoveNetwork(ctx context.Context, name string) error {
	if err := supervisor.RemoveNetworkDir(ctx, h.paths.RuntimeDir, name); err != nil {
		return err
	}
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

// addresses allocates (or finds again) the machine's addresses on its network.
func (h *Host) attachment(d *spec.Set, m *spec.Machine) (*netconf.Attachment, error) {
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

func (h *Host) ApplyRules(ctx context.Context, d *spec.Set) error {
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

func (h *Host) NetworkStatus(ctx context.Context, d *spec.Set) []api.NetworkStatus {
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
		if n.ResolverOn() {
			ns.Domain = n.Resolver.Domain
			ns.Resolver = supervisor.ResolverRunning(h.paths.RuntimeDir, n.Name)
		}
		for _, m := range d.Machines {
			if m.Network.Name == n.Name {
				ns.Machines = append(ns.Machines, m.Name)
			}
		}
		out = append(out, ns)
	}
	return out
}
