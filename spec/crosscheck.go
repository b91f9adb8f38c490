package spec

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/berthd/berth/internal/rundir"
)

// crossCheck reports what is wrong between documents of the defaulted set:
// networks that overlap, references to documents that are not declared, and
// addresses, MACs and host ports that two machines both want. Names that are not
// valid are reported by validate already, so they are not looked up here.
func crossCheck(set *Set, byKind map[string]map[string]*entry) {
	checkNetworkClashes(set, byKind[KindNetwork])
	c := newClaims(byKind[KindMachine])
	for _, m := range set.Machines {
		d := c.machines[m.Name].d
		if m.Image != "" && set.Image(m.Image) == nil && rundir.CheckName(m.Image) == nil {
			d.errorf("image", "no Image named %q is declared%s", m.Image, declared(byKind[KindImage], m.Image, KindImage))
		}
		if n := machineNetwork(d, set, m, byKind[KindNetwork]); n != nil {
			c.address(d, m, n)
			c.address6(d, m, n)
			checkOnNetwork(d, m, n)
		}
		c.mac(d, m)
		c.ports(d, m)
		c.users(d, m)
	}
}

// checkNetworkClashes reports a Network whose subnet or subnet6 overlaps an
// earlier one's, or that names an earlier one's bridge: the host would route or
// bridge the two as one.
func checkNetworkClashes(set *Set, networks map[string]*entry) {
	for i, a := range set.Networks {
		for _, b := range set.Networks[i+1:] {
			db := networks[b.Name].d
			if a.Subnet.IsValid() && b.Subnet.IsValid() && a.Subnet.Overlaps(b.Subnet) {
				db.errorf("subnet", "%s overlaps subnet %s of network %q (%s)", b.Subnet, a.Subnet, a.Name, where(networks[a.Name]))
			}
			if a.Subnet6.IsValid() && b.Subnet6.IsValid() && a.Subnet6.Overlaps(b.Subnet6) {
				db.errorf("subnet6", "%s overlaps subnet6 %s of network %q (%s)", b.Subnet6, a.Subnet6, a.Name, where(networks[a.Name]))
			}
			if a.Bridge == b.Bridge && a.Bridge != "" {
				db.errorf("bridge", "bridge %s is also network %q's (%s)", b.Bridge, a.Name, where(networks[a.Name]))
			}
		}
	}
}

// machineNetwork is the declared Network machine m is on, or nil when it is on
// none, on the host's, or on one that is not declared (reported here).
func machineNetwork(d *doc, set *Set, m *Machine, networks map[string]*entry) *Network {
	if !m.Network.Private() || rundir.CheckName(m.Network.Name) != nil {
		return nil
	}
	n := set.Network(m.Network.Name)
	if n == nil {
		field := "network.name"
		if !d.has(field) {
			field = "network" // the shorthand form, network: NAME
		}
		d.errorf(field, "no Network named %q is declared%s", m.Network.Name, declared(networks, m.Network.Name, KindNetwork))
	}
	return n
}

// checkOnNetwork reports what machine m asks of its Network that the Network
// does not have: an IPv6 forward needs a subnet6, resolvConf: network needs the
// network's resolver or dns servers.
func checkOnNetwork(d *doc, m *Machine, n *Network) {
	for i, p := range m.Network.Ports {
		if p.HostAddress.Is6() && !n.Subnet6.IsValid() {
			d.errorf(fmt.Sprintf("network.ports[%d]", i), "forwards from the IPv6 address %s, but network %q has no subnet6 to forward to", p.HostAddress, n.Name)
		}
	}
	if m.ResolvConf == ResolvConfNetwork && len(n.DNS) == 0 && !n.ResolverOn() {
		d.errorf("resolvConf", "network %q has its resolver off and lists no dns servers; turn its resolver on, add dns to it, or use host", n.Name)
	}
}

// owner is the machine, and its field, that claimed an address, a MAC or a host
// port first.
type owner struct {
	machine string
	field   string
}

type portKey struct {
	proto Protocol
	port  int
}

// portClaim is one forward of a host port: from one host address, or from every
// address when addr is not valid.
type portClaim struct {
	addr netip.Addr
	owner
}

// claims are what only one machine of a set may have: an address, a MAC, a
// forward of a host port. The first machine in the set's order keeps each; a
// later one is reported, naming the first and where it is declared.
type claims struct {
	machines map[string]*entry
	addrs    map[netip.Addr]owner
	macs     map[string]owner
	forwards map[portKey][]portClaim
	ranges   map[uint32]owner
}

func newClaims(machines map[string]*entry) *claims {
	return &claims{
		machines: machines,
		addrs:    map[netip.Addr]owner{},
		macs:     map[string]owner{},
		forwards: map[portKey][]portClaim{},
		ranges:   map[uint32]owner{},
	}
}

// address checks machine m's IPv4 address against its Network n (the prefix
// length, a host of the subnet, not the gateway) and claims it.
func (c *claims) address(d *doc, m *Machine, n *Network) {
	a := m.Network.Address
	if !a.IsValid() || !a.Addr().Is4() {
		return
	}
	if a.Bits() != 32 && a.Bits() != n.Subnet.Bits() && n.Subnet.IsValid() {
		d.errorf("network.address", "%s: the prefix length /%d differs from network %q's subnet %s; write %s or leave the length out", a, a.Bits(), n.Name, n.Subnet, a.Addr())
	} else if checkHostAddr(d, "network.address", a.Addr(), n.Subnet, "network "+n.Name+"'s subnet") {
		if a.Addr() == n.Gateway {
			d.errorf("network.address", "%s is the gateway of network %q (the host's bridge)", a.Addr(), n.Name)
		} else {
			c.addr(d, "network.address", a.Addr(), owner{m.Name, "address"})
		}
	}
}

// address6 is address for IPv6: the Network must have a subnet6.
func (c *claims) address6(d *doc, m *Machine, n *Network) {
	a := m.Network.Address6
	if !a.IsValid() || !a.Addr().Is6() {
		return
	}
	switch {
	case !n.Subnet6.IsValid():
		d.errorf("network.address6", "network %q has no subnet6", n.Name)
	case a.Bits() != 128 && a.Bits() != n.Subnet6.Bits():
		d.errorf("network.address6", "%s: the prefix length /%d differs from network %q's subnet6 %s; leave the length out", a, a.Bits(), n.Name, n.Subnet6)
	case checkHostAddr(d, "network.address6", a.Addr(), n.Subnet6, "network "+n.Name+"'s subnet6"):
		if a.Addr() == n.Gateway6 {
			d.errorf("network.address6", "%s is the gateway6 of network %q", a.Addr(), n.Name)
		} else {
			c.addr(d, "network.address6", a.Addr(), owner{m.Name, "address6"})
		}
	}
}

// addr claims address a for o, reporting it at field when another machine has it.
func (c *claims) addr(d *doc, field string, a netip.Addr, o owner) {
	if first, dup := c.addrs[a]; dup {
		d.errorf(field, "%s is already the address of machine %q (%s)", a, first.machine, where(c.machines[first.machine]))
		return
	}
	c.addrs[a] = o
}

// mac claims machine m's MAC address on its bridge. Only a private network has
// one: with the host's network or none the MAC is not used.
func (c *claims) mac(d *doc, m *Machine) {
	mac := m.Network.MAC
	if mac == "" || !m.Network.Private() {
		return
	}
	if o, dup := c.macs[mac]; dup {
		d.errorf("network.mac", "%s is already the MAC of machine %q (%s)", mac, o.machine, where(c.machines[o.machine]))
	} else {
		c.macs[mac] = owner{m.Name, "mac"}
	}
}

// users claims a pinned UID range: ranges are aligned and of one size, so two
// overlap exactly when they start at the same UID. Picked ranges are chosen on
// the host, clear of the pinned ones.
func (c *claims) users(d *doc, m *Machine) {
	base, ok := m.PrivateUsers.Pinned()
	if !ok || base%UserRangeSize != 0 {
		return
	}
	if o, dup := c.ranges[base]; dup {
		d.errorf("privateUsers", "the UID range %d-%d is already machine %q's (%s)", base, base+UserRangeSize-1, o.machine, where(c.machines[o.machine]))
	} else {
		c.ranges[base] = owner{m.Name, "privateUsers"}
	}
}

// ports claims the host ports machine m forwards. Two forwards of one port and
// protocol clash unless both are from host addresses and they differ: a forward
// from every address clashes with one from any address. A port out of range is
// reported by validate already.
func (c *claims) ports(d *doc, m *Machine) {
	for i, p := range m.Network.Ports {
		if p.HostPort < 1 || p.HostPort > 65535 {
			continue
		}
		field := fmt.Sprintf("network.ports[%d]", i)
		k := portKey{p.Protocol, p.HostPort}
		for _, o := range c.forwards[k] {
			if !o.addr.IsValid() || !p.HostAddress.IsValid() || o.addr == p.HostAddress {
				msg := fmt.Sprintf("host port %d/%s is already forwarded to machine %q (%s)", p.HostPort, p.Protocol, o.machine, where(c.machines[o.machine]))
				if o.machine == m.Name {
					msg = fmt.Sprintf("host port %d/%s is already forwarded by %s", p.HostPort, p.Protocol, o.field)
				}
				d.errorf(field, "%s", msg)
				break
			}
		}
		c.forwards[k] = append(c.forwards[k], portClaim{p.HostAddress, owner{m.Name, field}})
	}
}

// where is "file:line" of a document, for messages that name another one.
func where(e *entry) string {
	if e == nil {
		return "?"
	}
	return fmt.Sprintf("%s:%d", e.d.file, e.d.start.line)
}

// declared lists the declared names of a kind for a "not declared" message,
// suggesting the closest one.
func declared(names map[string]*entry, want, kind string) string {
	if len(names) == 0 {
		return fmt.Sprintf("; add a document with kind: %s and name: %s", kind, want)
	}
	keys := sortedKeys(names)
	if s := suggest(want, keys); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return " (declared: " + strings.Join(keys, ", ") + ")"
}
