package netconf

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/berthd/berth/internal/rundir"
)

// Ruleset is everything berth wants in its nftables tables, computed from the
// whole desired state: every berth network (masquerading or not, so that each
// bridge gets its guard rules), the port forwards of every running machine, and
// the anti-spoofing guards of the running machines that have them. ApplyRules
// installs it as a whole.
type Ruleset struct {
	Networks []NATNetwork
	Forwards []Forward
	Guards   []Guard
}

// NATNetwork is one berth network as the rules see it.
type NATNetwork struct {
	Name       string
	Bridge     string
	Subnet4    netip.Prefix
	Subnet6    netip.Prefix
	Masquerade bool // NAT the subnets' traffic to other networks behind the host's address
}

// Forward is one port forward: connections to HostPort on the host go to Port
// on the machine's address Addr.
type Forward struct {
	Machine string
	Proto   string // "tcp" or "udp"
	// HostAddr limits the forward to one of the host's addresses; zero means
	// every local address, localhost included. Its family must be Addr's.
	HostAddr netip.Addr
	HostPort uint16
	Addr     netip.Addr // the machine's address, IPv4 or IPv6
	Port     uint16
}

func (f Forward) String() string {
	host := "*"
	if f.HostAddr.IsValid() {
		host = f.HostAddr.String()
		if f.HostAddr.Is6() {
			host = "[" + host + "]"
		}
	}
	return fmt.Sprintf("%s %s %s:%d -> %s", f.Machine, f.Proto, host, f.HostPort, netip.AddrPortFrom(f.Addr, f.Port))
}

// TableName is berth's own nftables tables' name: `inet berth` holds the IPv4
// and the IPv6 rules of the networks (one table for both families), `bridge
// berth` the machines' anti-spoofing guards, which look at Ethernet frames as
// they enter a bridge: `nft list table inet berth`, `nft list table bridge berth`.
const TableName = "berth"

// The families of berth's tables, as nft names them.
const (
	familyInet   = "inet"
	familyBridge = "bridge"
)

// families are the families berth has a table in: ApplyRules replaces or
// deletes each of them.
var families = []string{familyInet, familyBridge}

// loopback4 is the IPv4 localhost network.
var loopback4 = netip.MustParsePrefix("127.0.0.0/8")

// Validate checks the ruleset as a whole: names, subnets, protocols and ports,
// that every forward's machine address is on one of the networks, and that no
// two forwards claim the same host port.
func (rs Ruleset) Validate() error {
	if err := rs.validateNetworks(); err != nil {
		return err
	}
	if err := rs.validateForwards(); err != nil {
		return err
	}
	return rs.validateGuards()
}

// validateNetworks checks each network and that no two share a name or a
// bridge: the rules tell a network's traffic by its bridge, so each network
// needs its own.
func (rs Ruleset) validateNetworks() error {
	names, bridges := map[string]bool{}, map[string]string{}
	for _, n := range rs.Networks {
		what := fmt.Sprintf("network %q", n.Name)
		if n.Name == "" || strings.ContainsAny(n.Name, " \t\n") {
			return fmt.Errorf("%s: want a name without white space: %w", what, ErrInvalid)
		}
		if names[n.Name] {
			return fmt.Errorf("%s: listed twice: %w", what, ErrInvalid)
		}
		names[n.Name] = true
		if !rundir.ValidLinkName(n.Bridge) {
			return fmt.Errorf("%s: bridge %q is not a valid interface name: %w", what, n.Bridge, ErrInvalid)
		}
		if other, dup := bridges[n.Bridge]; dup {
			return fmt.Errorf("%s: bridge %q is also network %q's; give each network its own bridge: %w", what, n.Bridge, other, ErrInvalid)
		}
		bridges[n.Bridge] = n.Name
		for _, s := range []struct {
			p  netip.Prefix
			v4 bool
		}{{n.Subnet4, true}, {n.Subnet6, false}} {
			if !s.p.IsValid() {
				continue
			}
			if s.p.Addr().Is4() != s.v4 || s.p.Addr().Is4In6() || s.p != s.p.Masked() {
				return fmt.Errorf("%s: subnet %s: want an IPv%s network address such as %s: %w", what, s.p, map[bool]string{true: "4", false: "6"}[s.v4], s.p.Masked(), ErrInvalid)
			}
		}
	}
	return nil
}

// validateForwards checks each forward against the networks, and against the
// forwards before it: two forwards of one host port and protocol clash unless
// both name a host address and the addresses differ (a forward from every
// address takes the port on all of them).
func (rs Ruleset) validateForwards() error {
	for i, f := range rs.Forwards {
		what := fmt.Sprintf("machine %q: port forward %s", f.Machine, f)
		if f.Machine == "" || strings.ContainsAny(f.Machine, " \t\n") {
			return fmt.Errorf("port forward %s: want a machine name without white space: %w", f, ErrInvalid)
		}
		if f.Proto != "tcp" && f.Proto != "udp" {
			return fmt.Errorf("%s: protocol %q: want tcp or udp: %w", what, f.Proto, ErrInvalid)
		}
		if f.HostPort == 0 || f.Port == 0 {
			return fmt.Errorf("%s: ports must be 1..65535: %w", what, ErrInvalid)
		}
		if !f.Addr.IsValid() || f.Addr.Is4In6() || f.Addr.Zone() != "" {
			return fmt.Errorf("%s: no machine address: %w", what, ErrInvalid)
		}
		if f.HostAddr.IsValid() && (f.HostAddr.Is4() != f.Addr.Is4() || f.HostAddr.Is4In6()) {
			return fmt.Errorf("%s: host address %s and machine address %s are of different IP versions; NAT cannot translate between them: %w", what, f.HostAddr, f.Addr, ErrInvalid)
		}
		if _, ok := rs.networkOf(f.Addr); !ok {
			return fmt.Errorf("%s: machine address %s is on none of the networks: %w", what, f.Addr, ErrInvalid)
		}
		for _, g := range rs.Forwards[:i] {
			if g.Proto == f.Proto && g.HostPort == f.HostPort && g.Addr.Is4() == f.Addr.Is4() &&
				(!g.HostAddr.IsValid() || !f.HostAddr.IsValid() || g.HostAddr == f.HostAddr) {
				return fmt.Errorf("%s: host port %s/%d is already forwarded to machine %q (%s); choose another host port or host address: %w",
					what, f.Proto, f.HostPort, g.Machine, g, ErrExists)
			}
		}
	}
	return nil
}

// validateGuards checks each anti-spoofing guard: one per machine and per
// port, and a MAC and addresses that a frame can really come from.
func (rs Ruleset) validateGuards() error {
	machines, ports := map[string]bool{}, map[string]bool{}
	for _, g := range rs.Guards {
		what := fmt.Sprintf("machine %q: anti-spoofing guard", g.Machine)
		// The name is in the guard's chain name and in its rules' comments,
		// which the kernel limits to 255 bytes.
		if g.Machine == "" || strings.ContainsAny(g.Machine, " \t\n") || len(g.Machine) > 64 {
			return fmt.Errorf("anti-spoofing guard of port %q: want a machine name without white space, at most 64 bytes: %w", g.HostIf, ErrInvalid)
		}
		if machines[g.Machine] {
			return fmt.Errorf("%s: listed twice: %w", what, ErrInvalid)
		}
		machines[g.Machine] = true
		if !rundir.ValidLinkName(g.HostIf) {
			return fmt.Errorf("%s: port %q is not a valid interface name: %w", what, g.HostIf, ErrInvalid)
		}
		if ports[g.HostIf] {
			return fmt.Errorf("%s: port %q is another machine's too: %w", what, g.HostIf, ErrInvalid)
		}
		ports[g.HostIf] = true
		if len(g.MAC) != 6 || g.MAC[0]&1 != 0 || bytes.Equal(g.MAC, make([]byte, 6)) {
			return fmt.Errorf("%s: MAC %s: want a 6-byte unicast address: %w", what, g.MAC, ErrInvalid)
		}
		if g.Addr4.IsValid() && (!g.Addr4.Is4() || g.Addr4.IsUnspecified()) {
			return fmt.Errorf("%s: IPv4 address %s: want a unicast IPv4 address: %w", what, g.Addr4, ErrInvalid)
		}
		if g.Addr6.IsValid() && (!g.Addr6.Is6() || g.Addr6.Is4In6() || g.Addr6.Zone() != "" || g.Addr6.IsUnspecified()) {
			return fmt.Errorf("%s: IPv6 address %s: want a unicast IPv6 address: %w", what, g.Addr6, ErrInvalid)
		}
	}
	return nil
}

// networkOf returns the network whose subnet holds addr.
func (rs Ruleset) networkOf(addr netip.Addr) (NATNetwork, bool) {
	for _, n := range rs.Networks {
		if (n.Subnet4.IsValid() && n.Subnet4.Contains(addr)) || (n.Subnet6.IsValid() && n.Subnet6.Contains(addr)) {
			return n, true
		}
	}
	return NATNetwork{}, false
}

// Empty reports whether the ruleset needs no table at all.
func (rs Ruleset) Empty() bool {
	return len(rs.Networks) == 0 && len(rs.Forwards) == 0 && len(rs.Guards) == 0
}

// tableSpec is one of berth's tables as plan and planBridge build it.
type tableSpec struct {
	family string // familyInet or familyBridge
	chains []chainSpec
}

// tables are the tables rs needs: `inet berth` when there are networks (or
// forwards), `bridge berth` when there are guards. The families left out have
// no table at all.
func tables(rs Ruleset) []tableSpec {
	var out []tableSpec
	if len(rs.Networks) > 0 || len(rs.Forwards) > 0 {
		out = append(out, tableSpec{family: familyInet, chains: plan(rs)})
	}
	if len(rs.Guards) > 0 {
		out = append(out, tableSpec{family: familyBridge, chains: planBridge(rs)})
	}
	return out
}

// The model of berth's table, built from a Ruleset by plan and turned into
// nftables expressions by the Linux code (and into text for tests and docs).

type chainSpec struct {
	name     string
	kind     string // "nat" or "filter"; "" for a regular chain
	hook     string // "prerouting", "output", "postrouting"
	priority int
	rules    []ruleSpec
}

type verdict int

const (
	vNone verdict = iota // fall through to the next rule
	vJump
	vDrop
	vMasquerade
	vDNAT
	vAccept // the packet passes this hook (of this table)
)

type ruleSpec struct {
	comment  string
	family   int // 0 (any), 4 or 6
	iif, oif string
	saddr    netip.Prefix
	saddrNeg bool
	daddr    netip.Prefix
	daddrNeg bool
	fibLocal bool // the destination is one of the host's own addresses
	ctDNAT   bool // the connection was destination-NATed
	proto    string
	dport    uint16
	conds    []cond // comparisons of packet fields, after the matches above (the bridge table's)
	counter  bool
	verdict  verdict
	jump     string
	to       netip.AddrPort // DNAT target
}

// plan builds berth's table for rs, which must be valid. The result is
// deterministic (sorted), so equal rulesets give equal tables and drift checks
// compare rule by rule.
//
// The chains, and why:
//   - guard (filter, prerouting, raw priority): drop packets from a bridge with a
//     127.0.0.0/8 source or destination. Forwards from localhost need
//     route_localnet=1 on the bridge, which by itself would let a machine reach
//     services bound to the host's 127.0.0.1 (the kube-proxy hole, CVE-2020-8558).
//   - prerouting and output (nat, dstnat priority): a packet to one of the host's
//     own addresses (fib daddr type local) goes through the forwards chain; output
//     is what makes forwards work from the host itself, to its own address and to
//     127.0.0.1, which nspawn's --port never handles (systemd #6106).
//   - forwards: one DNAT rule per forward.
//   - postrouting (nat, srcnat priority): per network, masquerade of localhost
//     sources leaving into the bridge (the machine could not answer 127.0.0.1),
//     hairpin masquerade (a machine reaching a forward that leads back into its
//     own network would get the answer straight from the peer, not from the
//     address it called), and outbound masquerade when the network has NAT.
func plan(rs Ruleset) []chainSpec {
	nets := slices.Clone(rs.Networks)
	slices.SortFunc(nets, func(a, b NATNetwork) int { return cmp.Compare(a.Name, b.Name) })
	fwds := slices.Clone(rs.Forwards)
	slices.SortFunc(fwds, compareForwards)

	has4, has6 := map[string]bool{}, map[string]bool{} // networks with forwards, by family
	for _, f := range fwds {
		n, _ := rs.networkOf(f.Addr)
		if f.Addr.Is4() {
			has4[n.Name] = true
		} else {
			has6[n.Name] = true
		}
	}

	guard := chainSpec{name: "guard", kind: "filter", hook: "prerouting", priority: -300}
	post := chainSpec{name: "postrouting", kind: "nat", hook: "postrouting", priority: 100}
	for _, n := range nets {
		guard.rules = append(guard.rules,
			ruleSpec{comment: networkComment(n), family: 4, iif: n.Bridge, saddr: loopback4, verdict: vDrop},
			ruleSpec{comment: "network " + n.Name + ": no localhost destinations", family: 4, iif: n.Bridge, daddr: loopback4, verdict: vDrop})
		if has4[n.Name] {
			post.rules = append(post.rules,
				ruleSpec{comment: "network " + n.Name + ": localhost to machines", family: 4, oif: n.Bridge, saddr: loopback4, counter: true, verdict: vMasquerade},
				ruleSpec{comment: "network " + n.Name + ": hairpin " + n.Subnet4.String(), family: 4, oif: n.Bridge, ctDNAT: true, saddr: n.Subnet4, counter: true, verdict: vMasquerade})
		}
		if has6[n.Name] {
			post.rules = append(post.rules,
				ruleSpec{comment: "network " + n.Name + ": hairpin " + n.Subnet6.String(), family: 6, oif: n.Bridge, ctDNAT: true, saddr: n.Subnet6, counter: true, verdict: vMasquerade})
		}
		if n.Masquerade {
			for _, s := range []netip.Prefix{n.Subnet4, n.Subnet6} {
				if s.IsValid() {
					post.rules = append(post.rules, ruleSpec{comment: "network " + n.Name + ": masquerade " + s.String(),
						family: familyOf(s.Addr()), saddr: s, daddr: s, daddrNeg: true, counter: true, verdict: vMasquerade})
				}
			}
		}
	}

	chains := []chainSpec{guard}
	if len(fwds) > 0 {
		jump := ruleSpec{comment: "port forwards to the host's own addresses", fibLocal: true, verdict: vJump, jump: "forwards"}
		forwards := chainSpec{name: "forwards"}
		for _, f := range fwds {
			r := ruleSpec{comment: "forward " + f.String(), family: familyOf(f.Addr), proto: f.Proto, dport: f.HostPort,
				counter: true, verdict: vDNAT, to: netip.AddrPortFrom(f.Addr, f.Port)}
			switch {
			case f.HostAddr == netip.IPv6Loopback():
				continue // the kernel cannot do it; see LoopbackProxy
			case f.HostAddr.IsValid():
				r.daddr = netip.PrefixFrom(f.HostAddr, f.HostAddr.BitLen())
			case f.Addr.Is6():
				// Leave [::1]:port to LoopbackProxy, which listens there.
				r.daddr, r.daddrNeg = netip.PrefixFrom(netip.IPv6Loopback(), 128), true
			}
			forwards.rules = append(forwards.rules, r)
		}
		chains = append(chains,
			chainSpec{name: "prerouting", kind: "nat", hook: "prerouting", priority: -100, rules: []ruleSpec{jump}},
			chainSpec{name: "output", kind: "nat", hook: "output", priority: -100, rules: []ruleSpec{jump}},
			forwards)
	}
	if len(post.rules) > 0 {
		chains = append(chains, post)
	}
	return chains
}

func compareForwards(a, b Forward) int {
	return cmp.Or(
		cmp.Compare(familyOf(a.Addr), familyOf(b.Addr)),
		cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(a.HostPort, b.HostPort),
		a.HostAddr.Compare(b.HostAddr),
		cmp.Compare(a.Machine, b.Machine),
	)
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// networkComment describes a network completely on its first guard rule, so
// that Rules can read the installed networks back.
func networkComment(n NATNetwork) string {
	s := "network " + n.Name + " bridge " + n.Bridge
	if n.Subnet4.IsValid() {
		s += " subnet4 " + n.Subnet4.String()
	}
	if n.Subnet6.IsValid() {
		s += " subnet6 " + n.Subnet6.String()
	}
	if n.Masquerade {
		s += " masquerade"
	}
	return s
}

func parseNetworkComment(c string) (NATNetwork, bool) {
	f := strings.Fields(c)
	if len(f) < 4 || f[0] != "network" || f[2] != "bridge" {
		return NATNetwork{}, false
	}
	n := NATNetwork{Name: f[1], Bridge: f[3]}
	for i := 4; i < len(f); i++ {
		switch f[i] {
		case "masquerade":
			n.Masquerade = true
		case "subnet4", "subnet6":
			if i+1 < len(f) {
				p, err := netip.ParsePrefix(f[i+1])
				if err != nil {
					return NATNetwork{}, false
				}
				if f[i] == "subnet4" {
					n.Subnet4 = p
				} else {
					n.Subnet6 = p
				}
				i++
			}
		}
	}
	return n, true
}

func parseForwardComment(c string) (Forward, bool) {
	// forward MACHINE PROTO HOST:PORT -> ADDR:PORT
	f := strings.Fields(c)
	if len(f) != 6 || f[0] != "forward" || f[4] != "->" {
		return Forward{}, false
	}
	fw := Forward{Machine: f[1], Proto: f[2]}
	i := strings.LastIndexByte(f[3], ':')
	if i < 0 {
		return Forward{}, false
	}
	if h := strings.Trim(f[3][:i], "[]"); h != "*" {
		a, err := netip.ParseAddr(h)
		if err != nil {
			return Forward{}, false
		}
		fw.HostAddr = a
	}
	if _, err := fmt.Sscan(f[3][i+1:], &fw.HostPort); err != nil {
		return Forward{}, false
	}
	to, err := netip.ParseAddrPort(f[5])
	if err != nil {
		return Forward{}, false
	}
	fw.Addr, fw.Port = to.Addr(), to.Port()
	return fw, true
}

// render writes the tables in nft's syntax, as `nft list ruleset` would show
// them (without handles and counters, and with the dependencies nft leaves
// implicit, such as `ether type ip` before `ip saddr`, written out): the golden
// files of the tests, and a readable account of what ApplyRules installs.
func render(ts []tableSpec) string {
	var b strings.Builder
	for i, t := range ts {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "table %s %s {\n", t.family, TableName)
		for i, c := range t.chains {
			if i > 0 {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "\tchain %s {\n", c.name)
			if c.hook != "" {
				fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy accept;\n", c.kind, c.hook, c.priority)
			}
			for _, r := range c.rules {
				fmt.Fprintf(&b, "\t\t%s\n", r)
			}
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func (r ruleSpec) String() string {
	var p []string
	ip := map[int]string{4: "ip", 6: "ip6"}[r.family]
	if r.family != 0 && !r.saddr.IsValid() && !r.daddr.IsValid() {
		p = append(p, "meta nfproto ipv"+fmt.Sprint(r.family))
	}
	if r.iif != "" {
		p = append(p, fmt.Sprintf("iifname %q", r.iif))
	}
	if r.oif != "" {
		p = append(p, fmt.Sprintf("oifname %q", r.oif))
	}
	if r.fibLocal {
		p = append(p, "fib daddr type local")
	}
	if r.ctDNAT {
		p = append(p, "ct status dnat")
	}
	addr := func(dir string, pf netip.Prefix, neg bool) {
		if !pf.IsValid() {
			return
		}
		s := ip + " " + dir + " "
		if neg {
			s += "!= "
		}
		if pf.IsSingleIP() {
			s += pf.Addr().String()
		} else {
			s += pf.String()
		}
		p = append(p, s)
	}
	addr("saddr", r.saddr, r.saddrNeg)
	addr("daddr", r.daddr, r.daddrNeg)
	if r.proto != "" {
		p = append(p, fmt.Sprintf("%s dport %d", r.proto, r.dport))
	}
	for _, c := range r.conds {
		p = append(p, c.String())
	}
	if r.counter {
		p = append(p, "counter")
	}
	switch r.verdict {
	case vJump:
		p = append(p, "jump "+r.jump)
	case vDrop:
		p = append(p, "drop")
	case vMasquerade:
		p = append(p, "masquerade")
	case vDNAT:
		p = append(p, fmt.Sprintf("dnat %s to %s", ip, r.to))
	case vAccept:
		p = append(p, "accept")
	}
	p = append(p, fmt.Sprintf("comment %q", r.comment))
	return strings.Join(p, " ")
}
