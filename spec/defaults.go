package spec

import (
	"net/netip"
	"slices"
	"time"

	"github.com/berthd/berth/internal/cpuset"
	"github.com/berthd/berth/internal/rundir"
)

// Every default of the language is applied here, and only here. Load applies them;
// code that builds documents by hand calls Default (or Set.Default) before using or
// hashing them. Each function is idempotent.

// Default values that other packages may want to show or compare with.
const (
	DefaultStopTimeout = Duration(30 * time.Second)
	DefaultBackoff     = Duration(time.Second)
	DefaultMaxBackoff  = Duration(5 * time.Minute)
	DefaultTmpfsMode   = FileMode(0o755)
	// DefaultPidsMax is systemd-nspawn@.service's TasksMax=: a fork bomb in a
	// machine stops there, far below the host's pid_max.
	DefaultPidsMax      = 16384
	DefaultMirror       = "http://deb.debian.org/debian"
	DefaultVariant      = "minbase"
	maxInterfaceNameLen = 15 // IFNAMSIZ - 1
	// DefaultPrivateUsers is a machine's user namespace setting when its
	// definition has none.
	DefaultPrivateUsers = PrivateUsersPick
)

// Default fills in every unset field of the machine that does not depend on other
// documents. Set.Default also fills in those that do (resolvConf, the address's
// prefix length).
func (m *Machine) Default() {
	if m.Hostname == "" {
		m.Hostname = m.Name
	}
	if m.State == "" {
		m.State = StateRunning
	}
	m.Boot = len(m.Command) == 0
	if m.Restart.Policy == "" {
		m.Restart.Policy = RestartOnFailure
	}
	if m.Restart.Backoff == 0 {
		m.Restart.Backoff = DefaultBackoff
	}
	if m.Restart.MaxBackoff == 0 {
		m.Restart.MaxBackoff = max(DefaultMaxBackoff, m.Restart.Backoff)
	}
	if m.StopTimeout == 0 {
		m.StopTimeout = DefaultStopTimeout
	}
	if m.Network.Name == "" {
		m.Network.Name = NetworkNone
	}
	if m.Network.AntiSpoofing == nil && m.Network.Private() {
		on := true
		m.Network.AntiSpoofing = &on
	}
	if m.Resources.PidsMax == 0 {
		m.Resources.PidsMax = DefaultPidsMax
	}
	// "0,1" and "0-1" are one set: the canonical spelling keeps the hash.
	if cpus, err := cpuset.Parse(m.Resources.CPUSet); err == nil {
		m.Resources.CPUSet = cpus.String()
	}
	if m.Security.Seccomp == "" {
		m.Security.Seccomp = Required
	}
	if m.Security.DeviceFence == "" {
		m.Security.DeviceFence = Required
	}
	m.Network.MAC = canonicalMAC(m.Network.MAC)
	for i := range m.Network.Ports {
		p := &m.Network.Ports[i]
		if p.Protocol == "" {
			p.Protocol = TCP
		}
		if p.MachinePort == 0 {
			p.MachinePort = p.HostPort
		}
	}
	for i := range m.Mounts {
		mt := &m.Mounts[i]
		if mt.Type == "" && mt.Source != "" {
			mt.Type = MountBind
		}
		if mt.Type == MountTmpfs && mt.Mode == 0 {
			mt.Mode = DefaultTmpfsMode
		}
	}
	for i := range m.Files {
		if m.Files[i].Mode == 0 {
			m.Files[i].Mode = DefaultFileMode
		}
	}
	m.Capabilities.Add = canonicalCaps(m.Capabilities.Add)
	m.Capabilities.Drop = canonicalCaps(m.Capabilities.Drop)
	if m.PrivateUsers == "" {
		m.PrivateUsers = DefaultPrivateUsers
	}
	if m.Root.Strategy == "" {
		m.Root.Strategy = RootAuto
	}
	if m.Root.OnImageChange == "" {
		m.Root.OnImageChange = ImageChangeKeep
	}
	m.defaultHealth()
	if m.Root.Ephemeral && m.Root.EphemeralSize == 0 {
		m.Root.EphemeralSize = DefaultEphemeralSize
	}
	if m.ResolvConf == "" {
		switch m.Network.Name {
		case NetworkNone:
			m.ResolvConf = ResolvConfOff
		case NetworkHost:
			m.ResolvConf = ResolvConfHost
		}
	}
}

// Default fills in the network's bridge name, gateways and NAT.
func (n *Network) Default() {
	if n.Bridge == "" && n.Name != "" {
		n.Bridge = BridgeName(n.Name)
	}
	if !n.Gateway.IsValid() && n.Subnet.IsValid() {
		n.Gateway = firstHost(n.Subnet)
	}
	if !n.Gateway6.IsValid() && n.Subnet6.IsValid() {
		n.Gateway6 = firstHost(n.Subnet6)
	}
	if n.NAT == nil {
		on := true
		n.NAT = &on
	}
	if n.Resolver == nil {
		n.Resolver = &Resolver{}
	}
	if n.Resolver.Enabled == nil {
		on := true
		n.Resolver.Enabled = &on
	}
	if n.Resolver.Domain == "" {
		n.Resolver.Domain = DefaultDomain
	}
}

// Default fills in debootstrap's mirror and variant.
func (i *Image) Default() {
	if d := i.Debootstrap; d != nil {
		if d.Mirror == "" {
			d.Mirror = DefaultMirror
		}
		if d.Variant == "" {
			d.Variant = DefaultVariant
		}
	}
}

// Default applies every document's defaults and then those that depend on other
// documents of the set.
func (s *Set) Default() {
	for _, n := range s.Networks {
		n.Default()
	}
	for _, i := range s.Images {
		i.Default()
	}
	for _, m := range s.Machines {
		m.Default()
	}
	s.defaultRefs()
}

// defaultRefs applies the machine defaults that depend on the machine's Network:
// a static address gets the subnet's prefix length, and resolvConf is network
// when the network has a resolver or lists DNS servers.
func (s *Set) defaultRefs() {
	for _, m := range s.Machines {
		n := s.Network(m.Network.Name)
		if n == nil {
			continue
		}
		if a := m.Network.Address; a.IsValid() && a.Bits() == a.Addr().BitLen() && n.Subnet.IsValid() {
			m.Network.Address = netip.PrefixFrom(a.Addr(), n.Subnet.Bits())
		}
		if a := m.Network.Address6; a.IsValid() && a.Bits() == a.Addr().BitLen() && n.Subnet6.IsValid() {
			m.Network.Address6 = netip.PrefixFrom(a.Addr(), n.Subnet6.Bits())
		}
		if m.ResolvConf == "" {
			if n.ResolverOn() || len(n.DNS) > 0 {
				m.ResolvConf = ResolvConfNetwork
			} else {
				m.ResolvConf = ResolvConfHost
			}
		}
	}
}

// BridgeName is the default bridge of a network: br-NAME, or when that is
// longer than a link name may be (15), br- with the name's start and a hash of
// the whole name (rundir.LinkName), so different long names still get
// different bridges.
func BridgeName(network string) string {
	return rundir.LinkName("br-", network)
}

// firstHost is the address after the subnet's network address.
func firstHost(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// canonicalCaps upper-cases capability names, adds the CAP_ prefix, sorts them and
// drops repeats, so that the order they were written in does not change the hash.
func canonicalCaps(caps []string) []string {
	if len(caps) == 0 {
		return nil
	}
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		out = append(out, canonicalCap(c))
	}
	slices.Sort(out)
	return slices.Compact(out)
}
