package netconf

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Guard is the anti-spoofing filter of one machine's port (the host side of its
// veth): every frame the machine sends must carry its MAC, IPv4 from its IPv4
// address, IPv6 from its IPv6 address or its EUI-64 link-local address, ARP and
// neighbour advertisements only for those addresses, and no router
// advertisements or DHCP server messages. Frames of other protocols (VLAN-tagged
// ones included) are dropped.
type Guard struct {
	Machine string
	HostIf  string           // the port: the host side of the machine's veth
	MAC     net.HardwareAddr // the only source MAC (and ARP sender MAC) allowed
	Addr4   netip.Addr       // the IPv4 source allowed; zero: no IPv4 and no ARP
	Addr6   netip.Addr       // the IPv6 source allowed besides LinkLocal; zero: only LinkLocal
}

// LinkLocal is the machine's IPv6 link-local address as the kernel forms it
// from the MAC (modified EUI-64, RFC 4291 appendix A: fe80::, the MAC with the
// universal/local bit flipped and ff:fe in the middle). It is the only
// link-local source a guarded machine may use.
func (g Guard) LinkLocal() netip.Addr { return linkLocal(g.MAC) }

func linkLocal(mac net.HardwareAddr) netip.Addr {
	if len(mac) != 6 {
		return netip.Addr{}
	}
	a := [16]byte{0: 0xfe, 1: 0x80, 8: mac[0] ^ 0x02, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe, 13: mac[3], 14: mac[4], 15: mac[5]}
	return netip.AddrFrom16(a)
}

// String describes the guard completely, as the comment of its jump rule, so
// that Rules can read the installed guards back (parseGuardComment).
func (g Guard) String() string {
	s := "machine " + g.Machine + " port " + g.HostIf + " mac " + g.MAC.String()
	if g.Addr4.IsValid() {
		s += " ipv4 " + g.Addr4.String()
	}
	if g.Addr6.IsValid() {
		s += " ipv6 " + g.Addr6.String()
	}
	return s
}

// The anti-spoofing table `bridge berth`, as data: the fields its rules
// compare and the rules of each machine's chain. The Linux code compiles them
// into nftables expressions; render shows them as nft would.

// fieldBase says where a field is read from.
type fieldBase int

const (
	baseLL      fieldBase = iota // the Ethernet header (VLAN tags as if in the frame)
	baseNH                       // the network header: ARP, IPv4, IPv6
	baseTH                       // the transport header, after IPv6 extension headers
	baseL4Proto                  // meta l4proto: the transport protocol (IPv6: after extension headers)
)

// field is one packet field the guards compare.
type field struct {
	name   string // as nft writes it
	base   fieldBase
	offset uint32 // bytes from the start of base
	len    uint32
	show   func([]byte) string
}

var (
	fEtherSaddr = field{"ether saddr", baseLL, 6, 6, showMAC}
	fEtherType  = field{"ether type", baseLL, 12, 2, showName(map[uint64]string{0x0800: "ip", 0x0806: "arp", 0x86dd: "ip6"})}
	// Hardware type, protocol type, hardware and protocol address lengths in
	// one compare, shown as nft shows it (only ever compared for equality).
	fARPHeader = field{"arp htype", baseNH, 0, 6, func(b []byte) string {
		return fmt.Sprintf("%d arp ptype %s arp hlen %d arp plen %d", binary.BigEndian.Uint16(b), showName(map[uint64]string{0x0800: "ip"})(b[2:4]), b[4], b[5])
	}}
	fARPOp      = field{"arp operation", baseNH, 6, 2, showName(map[uint64]string{1: "request", 2: "reply"})}
	fARPSha     = field{"arp saddr ether", baseNH, 8, 6, showMAC}
	fARPSpa     = field{"arp saddr ip", baseNH, 14, 4, showAddr}
	fIPSaddr    = field{"ip saddr", baseNH, 12, 4, showAddr}
	fIP6Saddr   = field{"ip6 saddr", baseNH, 8, 16, showAddr}
	fL4Proto    = field{"meta l4proto", baseL4Proto, 0, 1, showName(map[uint64]string{17: "udp", 58: "ipv6-icmp"})}
	fICMP6Type  = field{"icmpv6 type", baseTH, 0, 1, showName(map[uint64]string{134: "nd-router-advert", 135: "nd-neighbor-solicit", 136: "nd-neighbor-advert"})}
	fND6Target  = field{"icmpv6 target", baseTH, 8, 16, showAddr} // of a neighbour solicitation or advertisement
	fUDPSport   = field{"udp sport", baseTH, 0, 2, showName(nil)}
	etherIP     = []byte{0x08, 0x00}
	etherARP    = []byte{0x08, 0x06}
	etherIP6    = []byte{0x86, 0xdd}
	arpEthernet = []byte{0, 1, 0x08, 0x00, 6, 4} // Ethernet, IPv4, 6, 4
)

// Protocol numbers the guards use.
const (
	protoUDP    = 17
	protoICMPv6 = 58
	icmp6RA     = 134
	icmp6NS     = 135
	icmp6NA     = 136
	dhcp4Server = 67
	dhcp6Server = 547
	arpRequest  = 1
	arpReply    = 2
)

// cond compares a field with a value: equal, or with neg, different.
type cond struct {
	f   field
	neg bool
	val []byte
}

func is(f field, v []byte) cond    { return cond{f: f, val: v} }
func isNot(f field, v []byte) cond { return cond{f: f, neg: true, val: v} }

func (c cond) String() string {
	op := " "
	if c.neg {
		op = " != "
	}
	return c.f.name + op + c.f.show(c.val)
}

func showMAC(b []byte) string { return net.HardwareAddr(b).String() }

func showAddr(b []byte) string {
	a, _ := netip.AddrFromSlice(b)
	return a.String()
}

// showName shows a number by its name in names, or as a number.
func showName(names map[uint64]string) func([]byte) string {
	return func(b []byte) string {
		var n uint64
		for _, x := range b {
			n = n<<8 | uint64(x)
		}
		if s, ok := names[n]; ok {
			return s
		}
		return fmt.Sprint(n)
	}
}

func u8(v byte) []byte            { return []byte{v} }
func u16(v uint16) []byte         { return binary.BigEndian.AppendUint16(nil, v) }
func ipBytes(a netip.Addr) []byte { return a.AsSlice() }

// guardChain is the name of a machine's chain in the bridge table.
func guardChain(machine string) string { return "machine-" + machine }

// planBridge builds the table `bridge berth` for rs (which must be valid):
// one base chain at the bridge's prerouting hook, which every frame entering a
// bridge through a port passes once, whether the bridge then forwards it to
// another port or delivers it to the host (forward and input would each see
// only one of the two), and from it a jump for each guarded machine's port to
// that machine's chain. The filter priority (-200) puts it before
// br_netfilter's hooks.
//
// A machine's chain drops every frame that is not its own; what passes ends in
// accept, so its chain decides alone (other tables' chains still see the frame):
//
//   - the Ethernet source must be its MAC: nothing else it sends passes, so it
//     can neither take another machine's MAC nor make the bridge learn one;
//   - IPv4 only from its address (no DHCP server messages, source port 67);
//   - ARP only for Ethernet and IPv4, requests and replies, with its MAC as the
//     sender's hardware address and its address as the sender's IP address, or
//     0.0.0.0 (an address probe, RFC 5227, which updates no one's cache);
//     without an IPv4 address, no ARP;
//   - IPv6 only from its address or its EUI-64 link-local one, and from :: only
//     the neighbour solicitations of duplicate address detection for those
//     two; no router advertisements, neighbour advertisements only for its own
//     addresses, no DHCPv6 server messages (source port 547); IPv6 whose header
//     chain the kernel cannot parse is dropped (it could hide an ICMPv6 header
//     from the checks, RFC 7113);
//   - every other protocol, VLAN-tagged frames among them (their outer type is
//     802.1Q), is dropped; so are LLDP and STP frames to the bridge group
//     address, which a bridge without STP floods to every port.
//
// The link-layer address options of neighbour discovery are not checked: a
// machine can only point its own addresses at another MAC, which misdirects
// its own traffic and nobody else's.
func planBridge(rs Ruleset) []chainSpec {
	guards := slices.Clone(rs.Guards)
	slices.SortFunc(guards, func(a, b Guard) int { return cmp.Compare(a.Machine, b.Machine) })
	pre := chainSpec{name: "prerouting", kind: "filter", hook: "prerouting", priority: -200}
	chains := []chainSpec{pre}
	for _, g := range guards {
		chains[0].rules = append(chains[0].rules, ruleSpec{comment: g.String(), iif: g.HostIf, verdict: vJump, jump: guardChain(g.Machine)})
		chains = append(chains, chainSpec{name: guardChain(g.Machine), rules: guardRules(g)})
	}
	return chains
}

// guardRules are the rules of one machine's chain, the frequent cases (IPv4,
// then IPv6 data) decided first.
func guardRules(g Guard) []ruleSpec {
	m := "machine " + g.Machine + ": "
	drop := func(comment string, c ...cond) ruleSpec {
		return ruleSpec{comment: m + comment, conds: c, counter: true, verdict: vDrop}
	}
	accept := func(comment string, c ...cond) ruleSpec {
		return ruleSpec{comment: m + comment, conds: c, verdict: vAccept}
	}
	ip, arp, ip6 := is(fEtherType, etherIP), is(fEtherType, etherARP), is(fEtherType, etherIP6)
	mac := []byte(g.MAC)
	ll := g.LinkLocal()

	rules := []ruleSpec{drop("only its MAC "+g.MAC.String(), isNot(fEtherSaddr, mac))}
	if g.Addr4.IsValid() {
		rules = append(rules,
			drop("IPv4 only from "+g.Addr4.String(), ip, isNot(fIPSaddr, ipBytes(g.Addr4))),
			drop("no DHCP server", ip, is(fL4Proto, u8(protoUDP)), is(fUDPSport, u16(dhcp4Server))),
			accept("IPv4", ip))
	} else {
		rules = append(rules, drop("no IPv4 address", ip))
	}

	own6 := []netip.Addr{ll}
	if g.Addr6.IsValid() {
		own6 = []netip.Addr{g.Addr6, ll}
	}
	var notOwnSrc, notOwnTarget []cond
	for _, a := range own6 {
		rules = append(rules, accept("duplicate address detection for "+a.String(),
			ip6, is(fIP6Saddr, ipBytes(netip.IPv6Unspecified())), is(fL4Proto, u8(protoICMPv6)), is(fICMP6Type, u8(icmp6NS)), is(fND6Target, ipBytes(a))))
		notOwnSrc = append(notOwnSrc, isNot(fIP6Saddr, ipBytes(a)))
		notOwnTarget = append(notOwnTarget, isNot(fND6Target, ipBytes(a)))
	}
	rules = append(rules,
		drop("IPv6 only from "+joinAddrs(own6), append([]cond{ip6}, notOwnSrc...)...),
		drop("no router advertisements", ip6, is(fL4Proto, u8(protoICMPv6)), is(fICMP6Type, u8(icmp6RA))),
		drop("neighbour advertisements only for "+joinAddrs(own6), append([]cond{ip6, is(fL4Proto, u8(protoICMPv6)), is(fICMP6Type, u8(icmp6NA))}, notOwnTarget...)...),
		drop("no DHCPv6 server", ip6, is(fL4Proto, u8(protoUDP)), is(fUDPSport, u16(dhcp6Server))),
		// meta l4proto is only known when the kernel could walk the header
		// chain; 255 is reserved and never a real one.
		accept("IPv6 whose headers parse", ip6, isNot(fL4Proto, u8(255))))

	if g.Addr4.IsValid() {
		// The sender fields lie where fARPSha and fARPSpa read them only in
		// Ethernet/IPv4 ARP, which the accepts check last; a negated
		// compare of several fields would also read wrongly in `nft list`.
		hdr := is(fARPHeader, arpEthernet)
		rules = append(rules,
			drop("ARP only from its MAC "+g.MAC.String(), arp, isNot(fARPSha, mac)),
			drop("ARP only for "+g.Addr4.String()+" (or a probe from 0.0.0.0)", arp, isNot(fARPSpa, ipBytes(g.Addr4)), isNot(fARPSpa, ipBytes(netip.IPv4Unspecified()))),
			accept("ARP requests", arp, hdr, is(fARPOp, u16(arpRequest))),
			accept("ARP replies", arp, hdr, is(fARPOp, u16(arpReply))))
	}
	return append(rules, drop("nothing else (other protocols, VLAN-tagged frames, other ARP)"))
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, " and ")
}

// parseGuardComment reads a guard back from the comment of its jump rule
// (Guard.String).
func parseGuardComment(c string) (Guard, bool) {
	f := strings.Fields(c)
	if len(f) < 6 || f[0] != "machine" || f[2] != "port" || f[4] != "mac" || len(f)%2 != 0 {
		return Guard{}, false
	}
	mac, err := net.ParseMAC(f[5])
	if err != nil {
		return Guard{}, false
	}
	g := Guard{Machine: f[1], HostIf: f[3], MAC: mac}
	for i := 6; i+1 < len(f); i += 2 {
		a, err := netip.ParseAddr(f[i+1])
		if err != nil {
			return Guard{}, false
		}
		switch {
		case f[i] == "ipv4" && a.Is4() && !g.Addr4.IsValid():
			g.Addr4 = a
		case f[i] == "ipv6" && a.Is6() && !g.Addr6.IsValid():
			g.Addr6 = a
		default:
			return Guard{}, false
		}
	}
	return g, true
}
