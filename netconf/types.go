package netconf

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/berthd/berth/internal/rundir"
)

// Bridge is the desired state of a network's bridge on the host.
//
// A bridge with a gateway address is managed by berth: EnsureBridge creates it,
// sets exactly its addresses and brings it up, and marks it as berth's (its
// alias). A bridge with no gateway address at all is the user's own (say br0
// enslaving the LAN port, like nspawn's --network-bridge=br0): berth only checks
// that it exists and never changes it.
type Bridge struct {
	Name     string       // interface name, at most 15 bytes (the Network definition gives it)
	Network  string       // the network's name, for messages and the bridge's alias
	Gateway4 netip.Prefix // the host's address on the bridge and the subnet, e.g. 10.88.0.1/24
	Gateway6 netip.Prefix // the same for IPv6, e.g. fd42::1/64
	MTU      int          // 0: the kernel's default
}

// Managed reports whether berth owns the bridge (it has a gateway address).
func (b Bridge) Managed() bool { return b.Gateway4.IsValid() || b.Gateway6.IsValid() }

func (b Bridge) label() string {
	if b.Network != "" {
		return fmt.Sprintf("network %q: bridge %q", b.Network, b.Name)
	}
	return fmt.Sprintf("bridge %q", b.Name)
}

// Validate checks what can be checked without looking at the host.
func (b Bridge) Validate() error {
	if !rundir.ValidLinkName(b.Name) {
		return fmt.Errorf("%s: not a valid interface name (at most 15 bytes, no '/', ':' or spaces): %w", b.label(), ErrInvalid)
	}
	if err := checkGateway(b.Gateway4, true); err != nil {
		return fmt.Errorf("%s: gateway %s: %w", b.label(), b.Gateway4, err)
	}
	if err := checkGateway(b.Gateway6, false); err != nil {
		return fmt.Errorf("%s: gateway %s: %w", b.label(), b.Gateway6, err)
	}
	if b.MTU < 0 || b.MTU > 65535 || (b.MTU > 0 && b.MTU < 68) {
		return fmt.Errorf("%s: MTU %d out of range 68..65535: %w", b.label(), b.MTU, ErrInvalid)
	}
	return nil
}

func checkGateway(p netip.Prefix, v4 bool) error {
	if !p.IsValid() {
		return nil
	}
	a := p.Addr()
	if v4 != a.Is4() || a.Is4In6() {
		want := "an IPv4"
		if !v4 {
			want = "an IPv6"
		}
		return fmt.Errorf("want %s address with prefix length: %w", want, ErrInvalid)
	}
	if a == p.Masked().Addr() {
		return fmt.Errorf("is the subnet's network address; use a host address such as %s: %w", p.Masked().Addr().Next(), ErrInvalid)
	}
	if v4 && p.Bits() < 31 && a == lastAddr(p) {
		return fmt.Errorf("is the subnet's broadcast address: %w", ErrInvalid)
	}
	if a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() || a.IsLinkLocalUnicast() {
		return fmt.Errorf("not a usable unicast address: %w", ErrInvalid)
	}
	return nil
}

// Attachment is one machine's place on a network: the veth pair whose host side
// (HostIf) is a port of Bridge and whose other side is host0 in the machine's
// network namespace, with the machine's addresses and default routes.
type Attachment struct {
	Machine  string
	Bridge   string           // the bridge the host side joins
	HostIf   string           // default HostIfName(Machine)
	MAC      net.HardwareAddr // host0's address; default MAC(Machine)
	Addr4    netip.Prefix     // the machine's IPv4 address and subnet, e.g. 10.88.0.2/24
	Addr6    netip.Prefix     // the machine's IPv6 address and subnet
	Gateway4 netip.Addr       // IPv4 default route; zero: none
	Gateway6 netip.Addr       // IPv6 default route; zero: none
	MTU      int              // 0: the bridge's MTU
	// Guarded installs the machine's anti-spoofing guard (see Guard) on its
	// port before the port forwards anything: a machine is never on the
	// bridge unchecked, not even until the next ApplyRules.
	Guarded bool
}

// withDefaults fills the fields that have a derived default.
func (a Attachment) withDefaults() Attachment {
	if a.HostIf == "" {
		a.HostIf = HostIfName(a.Machine)
	}
	if len(a.MAC) == 0 {
		a.MAC = MAC(a.Machine)
	}
	return a
}

// Guard is the anti-spoofing guard of the machine's port: frames from HostIf
// must carry the attachment's MAC and addresses (see Guard).
func (a Attachment) Guard() Guard {
	a = a.withDefaults()
	g := Guard{Machine: a.Machine, HostIf: a.HostIf, MAC: a.MAC}
	if a.Addr4.IsValid() {
		g.Addr4 = a.Addr4.Addr()
	}
	if a.Addr6.IsValid() {
		g.Addr6 = a.Addr6.Addr()
	}
	return g
}

// Validate checks what can be checked without looking at the host.
func (a Attachment) Validate() error {
	a = a.withDefaults()
	m := fmt.Sprintf("machine %q", a.Machine)
	if a.Machine == "" {
		return fmt.Errorf("attachment without a machine name: %w", ErrInvalid)
	}
	if !rundir.ValidLinkName(a.HostIf) {
		return fmt.Errorf("%s: host link name %q is not a valid interface name: %w", m, a.HostIf, ErrInvalid)
	}
	if !rundir.ValidLinkName(a.Bridge) {
		return fmt.Errorf("%s: bridge name %q is not a valid interface name: %w", m, a.Bridge, ErrInvalid)
	}
	if len(a.MAC) != 6 || a.MAC[0]&1 != 0 {
		return fmt.Errorf("%s: MAC %s: want a 6-byte unicast address: %w", m, a.MAC, ErrInvalid)
	}
	for _, x := range []struct {
		addr netip.Prefix
		gw   netip.Addr
		v4   bool
	}{{a.Addr4, a.Gateway4, true}, {a.Addr6, a.Gateway6, false}} {
		if err := checkGateway(x.addr, x.v4); err != nil {
			return fmt.Errorf("%s: address %s: %w", m, x.addr, err)
		}
		if !x.gw.IsValid() {
			continue
		}
		if !x.addr.IsValid() {
			return fmt.Errorf("%s: gateway %s without an address of its family: %w", m, x.gw, ErrInvalid)
		}
		// The default route needs the gateway on the link: in the subnet.
		if !x.addr.Masked().Contains(x.gw) || x.gw == x.addr.Addr() {
			return fmt.Errorf("%s: gateway %s is not another address in the machine's subnet %s: %w", m, x.gw, x.addr.Masked(), ErrInvalid)
		}
	}
	if a.MTU < 0 || a.MTU > 65535 || (a.MTU > 0 && a.MTU < 68) {
		return fmt.Errorf("%s: MTU %d out of range 68..65535: %w", m, a.MTU, ErrInvalid)
	}
	return nil
}

// lastAddr is the highest address of p (the IPv4 broadcast address).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
