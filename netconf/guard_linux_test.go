package netconf

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// TestGuardFrames sends, from machine 2's host0, every kind of frame a guest
// could use to take another machine's (or the gateway's) addresses, and a few
// it must still be able to send, and looks at what reaches machine 1's host0:
// first with machine 2 guarded, then with its guard left out (antiSpoofing:
// false), when everything arrives — so the rules are what stopped the rest.
func TestGuardFrames(t *testing.T) {
	ctx := context.Background()
	w := newNATWorld(t)
	g1, g2 := w.a1.Guard(), w.a2.Guard()
	mac1, mac2 := g1.MAC, g2.MAC
	ip1, ip2, gw4 := g1.Addr4, g2.Addr4, w.b.Gateway4.Addr()
	ip61, ip62, gw6 := g1.Addr6, g2.Addr6, w.b.Gateway6.Addr()
	ll2 := g2.LinkLocal()
	allNodes := mustAddr("ff02::1")
	unspec4, unspec6 := mustAddr("0.0.0.0"), mustAddr("::")

	// Each frame carries a marker inside its packet (br_netfilter, when
	// loaded, trims whatever follows an IP packet), so that it can be told
	// apart where it arrives: in UDP data, in an ND option of an unknown type
	// (which receivers skip), after an ARP packet.
	type frameCase struct {
		name  string
		frame func(m []byte) []byte
		pass  bool // arrives while machine 2 is guarded
	}
	bcast4 := mustAddr("255.255.255.255")
	udp4 := func(src netip.Addr, sport, dport uint16) func([]byte) []byte {
		return func(m []byte) []byte {
			return ether(broadcastMAC, mac2, etherTypeIPv4, ipv4UDP(src, bcast4, sport, dport, m))
		}
	}
	arp := func(src net.HardwareAddr, op uint16, sha net.HardwareAddr, spa, tpa netip.Addr) func([]byte) []byte {
		return func(m []byte) []byte {
			return append(ether(broadcastMAC, src, etherTypeARP, arpPacket(op, sha, spa, make(net.HardwareAddr, 6), tpa)), m...)
		}
	}
	const icmp6, udp = 58, 17
	v6udp := func(src netip.Addr, sport, dport uint16) func([]byte) []byte {
		return func(m []byte) []byte {
			return ether(broadcastMAC, mac2, etherTypeIPv6, ipv6Packet(src, allNodes, udp, udp6(sport, dport, m)))
		}
	}
	v6icmp := func(src, dst netip.Addr, msg []byte) func([]byte) []byte {
		return func(m []byte) []byte {
			return ether(broadcastMAC, mac2, etherTypeIPv6, ipv6Packet(src, dst, icmp6, append(append(append([]byte{}, msg...), 200, 2), m...)))
		}
	}
	badARPHeader := arpPacket(1, mac2, ip2, make(net.HardwareAddr, 6), ip1)
	badARPHeader[5] = 16 // an IPv6-sized protocol address

	cases := []frameCase{
		{"IPv4 from its address", udp4(ip2, 5000, 5000), true},
		{"IPv4 from another machine's address", udp4(ip1, 5000, 5000), false},
		{"IPv4 from the gateway's address", udp4(gw4, 5000, 5000), false},
		{"IPv4 from 0.0.0.0 (a DHCP client)", udp4(unspec4, 68, 67), false},
		{"IPv4 with another machine's MAC", func(m []byte) []byte {
			return ether(broadcastMAC, mac1, etherTypeIPv4, ipv4UDP(ip2, bcast4, 5000, 5000, m))
		}, false},
		{"a DHCP server's offer", udp4(ip2, 67, 68), false},
		{"ARP request", arp(mac2, 1, mac2, ip2, ip1), true},
		{"ARP reply", func(m []byte) []byte {
			return append(ether(mac1, mac2, etherTypeARP, arpPacket(2, mac2, ip2, mac1, ip1)), m...)
		}, true},
		{"ARP probe from 0.0.0.0", arp(mac2, 1, mac2, unspec4, ip2), true},
		{"gratuitous ARP for its address", arp(mac2, 1, mac2, ip2, ip2), true},
		{"gratuitous ARP for another machine's address", arp(mac2, 1, mac2, ip1, ip1), false},
		{"ARP reply for another machine's address", arp(mac2, 2, mac2, ip1, gw4), false},
		{"gratuitous ARP for the gateway", arp(mac2, 1, mac2, gw4, gw4), false},
		{"ARP with another machine's sender MAC", arp(mac2, 1, mac1, ip2, ip1), false},
		{"ARP from another machine's MAC", arp(mac1, 1, mac1, ip1, ip1), false},
		{"ARP of another operation (RARP request)", arp(mac2, 3, mac2, ip2, ip1), false},
		{"ARP for another protocol address size", func(m []byte) []byte {
			return append(ether(broadcastMAC, mac2, etherTypeARP, badARPHeader), m...)
		}, false},
		{"IPv6 from its address", v6udp(ip62, 5000, 5000), true},
		{"IPv6 from its link-local address", v6udp(ll2, 5000, 5000), true},
		{"IPv6 from another machine's address", v6udp(ip61, 5000, 5000), false},
		{"IPv6 from the gateway's address", v6udp(gw6, 5000, 5000), false},
		{"IPv6 from another link-local address", v6udp(mustAddr("fe80::1234:5678:9abc:def0"), 5000, 5000), false},
		{"IPv6 from another address of the subnet", v6udp(mustAddr("fd88::99"), 5000, 5000), false},
		{"IPv6 from :: that is no solicitation", v6udp(unspec6, 546, 547), false},
		{"duplicate address detection for its address", v6icmp(unspec6, solicitedNode(ip62), icmp6ND(135, 0, ip62, nil)), true},
		{"duplicate address detection for its link-local address", v6icmp(unspec6, solicitedNode(ll2), icmp6ND(135, 0, ll2, nil)), true},
		{"duplicate address detection for another machine's address", v6icmp(unspec6, solicitedNode(ip61), icmp6ND(135, 0, ip61, nil)), false},
		{"neighbour solicitation for another machine", v6icmp(ip62, solicitedNode(ip61), icmp6ND(135, 0, ip61, mac2)), true},
		{"neighbour advertisement for its address", v6icmp(ip62, allNodes, icmp6ND(136, 0x20, ip62, mac2)), true},
		{"neighbour advertisement for its link-local address", v6icmp(ll2, allNodes, icmp6ND(136, 0x20, ll2, mac2)), true},
		{"neighbour advertisement for another machine's address", v6icmp(ip62, allNodes, icmp6ND(136, 0x20, ip61, mac2)), false},
		{"neighbour advertisement for the gateway", v6icmp(ll2, allNodes, icmp6ND(136, 0xa0, gw6, mac2)), false},
		{"router advertisement", v6icmp(ll2, allNodes, icmp6RAPacket(mustPrefix("2001:db8:1::/64"), mac2)), false},
		{"a DHCPv6 server's advertise", v6udp(ll2, 547, 546), false},
		{"IPv6 whose extension headers do not parse", func(m []byte) []byte {
			// A hop-by-hop header that claims 2 KiB, followed by another
			// extension header: a chain the kernel cannot walk.
			return ether(broadcastMAC, mac2, etherTypeIPv6, ipv6Packet(ip62, allNodes, 0, append([]byte{60, 255, 0, 0, 0, 0, 0, 0}, m...)))
		}, false},
		{"a VLAN-tagged frame", func(m []byte) []byte {
			return vlanEther(broadcastMAC, mac2, 5, etherTypeIPv4, ipv4UDP(ip2, bcast4, 5000, 5000, m))
		}, false},
		{"another protocol (local experimental ethertype)", func(m []byte) []byte {
			return ether(broadcastMAC, mac2, 0x88b5, m)
		}, false},
	}

	send := func(t *testing.T) map[string]bool {
		t.Helper()
		tx, rx := openPacket(t, w.m2.pid, GuestIfName), openPacket(t, w.m1.pid, GuestIfName)
		markers := map[string][]byte{}
		for _, c := range cases {
			m := newMarker()
			markers[c.name] = m
			tx.send(t, c.frame(m))
		}
		got := rx.received(t, 300*time.Millisecond)
		arrived := map[string]bool{}
		for name, m := range markers {
			arrived[name] = containsMarker(got, m)
		}
		return arrived
	}

	// br_netfilter, when loaded, validates bridged IP headers itself (and
	// would drop the broken chain without the guard): off in the test's host
	// namespace (the setting is per namespace), so the guard alone is tested.
	if _, err := sh(t, w.host.pid, "test", "-d", "/proc/sys/net/bridge"); err == nil {
		mustSh(t, w.host.pid, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0")
	}

	guarded := Ruleset{Networks: []NATNetwork{w.net}, Guards: []Guard{g1, g2}}
	must(t, w.h.ApplyRules(ctx, guarded))
	arrived := send(t)
	for _, c := range cases {
		if arrived[c.name] != c.pass {
			t.Errorf("guarded: %s: arrived %v, want %v", c.name, arrived[c.name], c.pass)
		}
	}
	// What did not arrive was dropped by machine 2's chain, and counted.
	if n := droppedIn(t, w.host.pid, guardChain(g2.Machine)); n < countFails(cases, func(c frameCase) bool { return !c.pass }) {
		t.Errorf("machine 2's chain counted %d drops, fewer than the frames it stopped", n)
	}

	// Without machine 2's guard everything arrives.
	must(t, w.h.ApplyRules(ctx, Ruleset{Networks: []NATNetwork{w.net}, Guards: []Guard{g1}}))
	arrived = send(t)
	for _, c := range cases {
		if !arrived[c.name] {
			t.Errorf("unguarded: %s did not arrive", c.name)
		}
	}
}

func countFails[T any](s []T, f func(T) bool) int {
	n := 0
	for _, x := range s {
		if f(x) {
			n++
		}
	}
	return n
}

// droppedIn sums the packet counters of the drop rules in a chain of the
// bridge table.
func droppedIn(t *testing.T, pid int, chain string) int {
	t.Helper()
	return droppedBy(t, pid, chain, "")
}

// droppedBy counts the drops of the rules of chain whose comment ends with
// rule (all of them for "").
func droppedBy(t *testing.T, pid int, chain, rule string) int {
	t.Helper()
	out := mustSh(t, pid, "nft", "list", "chain", "bridge", TableName, chain)
	n := 0
	for _, m := range regexp.MustCompile(`counter packets (\d+) bytes \d+ drop comment "(.*)"`).FindAllStringSubmatch(out, -1) {
		if strings.HasSuffix(m[2], rule) {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
	}
	return n
}

// The bridge table is installed, read back, checked for drift and repaired
// like the inet one, and goes with the guards.
func TestGuardRulesDrift(t *testing.T) {
	ctx := context.Background()
	w := newNATWorld(t)
	rs := Ruleset{Networks: []NATNetwork{w.net}, Guards: []Guard{w.a1.Guard(), w.a2.Guard()}}
	must(t, w.h.ApplyRules(ctx, rs))
	must(t, w.h.ApplyRules(ctx, rs))
	if d, err := w.h.RulesDrift(ctx, rs); err != nil || d != nil {
		t.Fatalf("drift after ApplyRules: %q, %v", d, err)
	}
	got, err := w.h.Rules(ctx)
	must(t, err)
	want := append([]Guard{}, rs.Guards...)
	if want[0].Machine > want[1].Machine {
		want[0], want[1] = want[1], want[0]
	}
	if !reflect.DeepEqual(got.Guards, want) || !reflect.DeepEqual(got.Networks, rs.Networks) {
		t.Fatalf("Rules read back %+v, want %+v", got, rs)
	}
	// The machines still reach each other and the gateway through their guards.
	ping(t, w.m1.pid, w.a2.Addr4.Addr())
	ping(t, w.m2.pid, w.a1.Addr6.Addr())
	ping(t, w.m2.pid, w.b.Gateway4.Addr())
	ping(t, w.m1.pid, w.b.Gateway6.Addr())

	chain := guardChain(w.a2.Machine)
	for _, c := range []struct {
		what  string
		drift func()
	}{
		{"table deleted", func() { mustSh(t, w.host.pid, "nft", "delete", "table", "bridge", TableName) }},
		{"chain flushed", func() { mustSh(t, w.host.pid, "nft", "flush", "chain", "bridge", TableName, chain) }},
		{"one rule deleted", func() {
			out := mustSh(t, w.host.pid, "nft", "-a", "list", "chain", "bridge", TableName, chain)
			m := regexp.MustCompile(`IPv4 only from [^"]*" # handle (\d+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no IPv4 rule in\n%s", out)
			}
			mustSh(t, w.host.pid, "nft", "delete", "rule", "bridge", TableName, chain, "handle", m[1])
		}},
		{"jump deleted", func() {
			out := mustSh(t, w.host.pid, "nft", "-a", "list", "chain", "bridge", TableName, "prerouting")
			m := regexp.MustCompile(`jump ` + regexp.QuoteMeta(chain) + ` comment "[^"]*" # handle (\d+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no jump to %s in\n%s", chain, out)
			}
			mustSh(t, w.host.pid, "nft", "delete", "rule", "bridge", TableName, "prerouting", "handle", m[1])
		}},
		{"an accept put first", func() {
			mustSh(t, w.host.pid, "nft", "insert", "rule", "bridge", TableName, chain, "accept")
		}},
		{"an accept before the jumps", func() {
			mustSh(t, w.host.pid, "nft", "insert", "rule", "bridge", TableName, "prerouting", "accept")
		}},
	} {
		c.drift()
		if d, err := w.h.RulesDrift(ctx, rs); err != nil || len(d) == 0 {
			t.Fatalf("%s: no drift found: %q, %v", c.what, d, err)
		} else {
			t.Logf("%s: %q", c.what, d)
		}
		must(t, w.h.ApplyRules(ctx, rs))
		if d, err := w.h.RulesDrift(ctx, rs); err != nil || d != nil {
			t.Fatalf("%s: drift after repair: %q, %v", c.what, d, err)
		}
	}

	// A guard that is no longer wanted is drift too, named by its machine.
	if d, err := w.h.RulesDrift(ctx, Ruleset{Networks: rs.Networks, Guards: rs.Guards[:1]}); err != nil || len(d) != 1 || !strings.Contains(d[0], "machine "+rs.Guards[1].Machine+" has an anti-spoofing guard it should not have") {
		t.Fatalf("drift with a guard too many: %q, %v", d, err)
	}

	// A ruleset without guards has no bridge table; an empty one no table at all.
	rs.Guards = nil
	must(t, w.h.ApplyRules(ctx, rs))
	if out := mustSh(t, w.host.pid, "nft", "list", "tables"); strings.Contains(out, "bridge "+TableName) || !strings.Contains(out, "inet "+TableName) {
		t.Fatalf("tables without guards:\n%s", out)
	}
	if d, err := w.h.RulesDrift(ctx, Ruleset{Networks: rs.Networks, Guards: []Guard{w.a1.Guard()}}); err != nil || len(d) != 1 {
		t.Fatalf("drift with a missing bridge table: %q, %v", d, err)
	}
	must(t, w.h.ApplyRules(ctx, Ruleset{Networks: rs.Networks, Guards: []Guard{w.a1.Guard()}}))
	if d, err := w.h.RulesDrift(ctx, rs); err != nil || len(d) != 1 || !strings.Contains(d[0], "bridge") {
		t.Fatalf("drift with a bridge table not wanted: %q, %v", d, err)
	}
	must(t, w.h.ApplyRules(ctx, Ruleset{}))
	if out := mustSh(t, w.host.pid, "nft", "list", "tables"); strings.Contains(out, TableName) {
		t.Fatalf("tables left after the empty ruleset:\n%s", out)
	}
}

// TestGuardedMachines boots three real machines on one network, all guarded:
// A, a Debian guest that runs systemd-networkd (as images made for nspawn do:
// DHCP, IPv4 link-local, LLDP, its own IPv6 link-local address); B, a busybox
// guest that tries to take A's and the gateway's addresses and to advertise
// itself as a router; C, a busybox guest whose kernel makes a stable-privacy
// link-local address (RFC 7217) instead of the EUI-64 one. Everything a normal
// guest does works; B's spoofing reaches nobody; with B's guard left out
// (antiSpoofing: false) the same spoofing poisons C, which shows that the
// guard is what stopped it.
func TestGuardedMachines(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	ctx := context.Background()
	w := newNATWorldNoMachines(t)
	aName, bName, cName := testenv.UniqueName("deb"), testenv.UniqueName("bad"), testenv.UniqueName("bb")
	attA := attachment(aName, w.b, "10.88.0.2", "fd88::2")
	attB := attachment(bName, w.b, "10.88.0.3", "fd88::3")
	attC := attachment(cName, w.b, "10.88.0.4", "fd88::4")
	macA, macB := attA.Guard().MAC, attB.Guard().MAC
	ipA, gw4 := attA.Addr4.Addr(), w.b.Gateway4.Addr()
	// Guards match their port by name: they can be in place before the links.
	// B's is not in the ruleset: Attach installs it (Guarded) before B's port
	// joins the bridge, so B is never on the bridge unchecked, not even before
	// the next ApplyRules of the reconciler.
	guarded := Ruleset{Networks: []NATNetwork{w.net}, Guards: []Guard{attA.Guard(), attC.Guard()}}
	must(t, w.h.ApplyRules(ctx, guarded))
	attB.Guarded = true

	rootA := debianRoot(t, aName)
	units := filepath.Join(rootA.Overlay.Upper, "etc/systemd/system")
	must(t, os.MkdirAll(filepath.Join(units, "multi-user.target.wants"), 0o755))
	must(t, os.Symlink("/lib/systemd/system/systemd-networkd.service", filepath.Join(units, "multi-user.target.wants/systemd-networkd.service")))
	must(t, os.Symlink("/lib/systemd/system/systemd-networkd.socket", filepath.Join(units, "sockets.target.wants/systemd-networkd.socket")))
	a := bootMachine(t, aName, rootA, func(ctx context.Context, pid int) error { return w.h.Attach(ctx, pid, attA) })
	b := bootMachine(t, bName, busyboxRoot(t, bName), func(ctx context.Context, pid int) error { return w.h.Attach(ctx, pid, attB) })
	c := bootMachine(t, cName, busyboxRoot(t, cName), func(ctx context.Context, pid int) error {
		// A secret before host0 exists makes its link-local address stable-privacy.
		if out, err := sh(t, pid, "sysctl", "-qw", "net.ipv6.conf.default.stable_secret=fd00:1234:5678::1"); err != nil {
			return fmt.Errorf("stable_secret: %v: %s", err, out)
		}
		return w.h.Attach(ctx, pid, attC)
	})

	// A normal guest's traffic passes: between machines and to the gateway,
	// IPv4 and IPv6, also from C, whose link-local address the guard does not
	// allow (its neighbour discovery for global addresses uses those).
	for _, p := range []struct {
		from int
		to   netip.Addr
	}{
		{c.leader, ipA}, {c.leader, attA.Addr6.Addr()}, {b.leader, ipA}, {a.leader, attC.Addr4.Addr()},
		{a.leader, attC.Addr6.Addr()}, {a.leader, gw4}, {a.leader, w.b.Gateway6.Addr()},
		{c.leader, w.b.Gateway6.Addr()}, {b.leader, attC.Addr6.Addr()},
	} {
		ping(t, p.from, p.to)
	}
	if out := mustSh(t, c.leader, "ip", "-6", "addr", "show", "dev", GuestIfName, "scope", "link"); !strings.Contains(out, "fe80::") || strings.Contains(out, attC.Guard().LinkLocal().String()) {
		t.Errorf("machine C should have a stable-privacy link-local address, not %s:\n%s", attC.Guard().LinkLocal(), out)
	}
	// systemd-networkd kept berth's addresses and made the EUI-64 link-local
	// address, which its neighbours reach.
	if out := mustSh(t, a.leader, "ip", "addr", "show", "dev", GuestIfName); !strings.Contains(out, attA.Addr4.String()) || !strings.Contains(out, attA.Addr6.String()) ||
		!strings.Contains(out, attA.Guard().LinkLocal().String()+"/64") {
		t.Errorf("machine A lost its addresses, or has no EUI-64 link-local address %s:\n%s", attA.Guard().LinkLocal(), out)
	}
	ping(t, b.leader, attA.Guard().LinkLocal().WithZone(GuestIfName))

	// B takes A's IPv4 address and the gateway's: adds them (and so answers
	// ARP for them), announces them (gratuitous ARP requests and replies),
	// then also takes A's MAC.
	spoof := func() {
		t.Helper()
		for _, mode := range []string{"-U", "-A"} {
			mustSh(t, b.leader, "busybox", "arping", mode, "-c", "2", "-w", "1", "-I", GuestIfName, "-s", ipA.String(), ipA.String())
		}
		mustSh(t, b.leader, "busybox", "arping", "-U", "-c", "2", "-w", "1", "-I", GuestIfName, "-s", gw4.String(), gw4.String())
	}
	ping(t, c.leader, gw4)
	mustSh(t, b.leader, "ip", "addr", "add", attA.Addr4.String(), "dev", GuestIfName)
	mustSh(t, b.leader, "ip", "addr", "add", gw4.String()+"/32", "dev", GuestIfName)
	spoof()
	mustSh(t, c.leader, "ip", "neigh", "flush", "dev", GuestIfName, "to", ipA.String())
	ping(t, c.leader, ipA) // B answers the ARP request too
	if got := neighMAC(t, c.leader, ipA); got != macA.String() {
		t.Errorf("C's neighbour entry for A's address %s is %q, want A's MAC %s", ipA, got, macA)
	}
	if got := neighMAC(t, c.leader, gw4); got != bridgeMAC(w.b.Name).String() {
		t.Errorf("C's neighbour entry for the gateway is %q, want the bridge's MAC %s", got, bridgeMAC(w.b.Name))
	}
	mustSh(t, b.leader, "ip", "link", "set", GuestIfName, "address", macA.String())
	spoof()
	ping(t, c.leader, ipA) // through the bridge's forwarding table, which B could not poison
	if got := neighMAC(t, c.leader, ipA); got != macA.String() {
		t.Errorf("with A's MAC on B: C's neighbour entry for A is %q, want %s", got, macA)
	}
	mustSh(t, b.leader, "ip", "link", "set", GuestIfName, "address", macB.String())
	if n := droppedIn(t, w.host.pid, guardChain(bName)); n < 6 {
		t.Errorf("B's chain counted %d drops for its spoofing", n)
	}

	// B advertises itself as a router for a prefix of its own.
	ra := func() {
		tx := openPacket(t, b.leader, GuestIfName)
		llB := attB.Guard().LinkLocal()
		tx.send(t, ether(mustMAC("33:33:00:00:00:01"), macB, etherTypeIPv6, ipv6Packet(llB, mustAddr("ff02::1"), 58, icmp6RAPacket(mustPrefix("2001:db8:1::/64"), macB))))
	}
	dropped := droppedBy(t, w.host.pid, guardChain(bName), ": no router advertisements")
	ra()
	// B's guard dropped it: it never reached the bridge, nor C.
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := droppedBy(t, w.host.pid, guardChain(bName), ": no router advertisements"); n <= dropped {
			return fmt.Errorf("B's guard did not count its router advertisement as dropped (%d drops)", n)
		}
		return nil
	})
	if out := mustSh(t, c.leader, "ip", "-6", "addr", "show", "dev", GuestIfName); strings.Contains(out, "2001:db8:1:") {
		t.Errorf("C took an address from B's router advertisement:\n%s", out)
	}
	if out := mustSh(t, c.leader, "ip", "-6", "route"); strings.Contains(out, "proto ra") {
		t.Errorf("C took a route from B's router advertisement:\n%s", out)
	}
	// A and C still reach each other and the gateway.
	ping(t, c.leader, ipA)
	ping(t, a.leader, attC.Addr6.Addr())
	ping(t, c.leader, gw4)

	// antiSpoofing: false for B: the same spoofing poisons C.
	must(t, w.h.ApplyRules(ctx, Ruleset{Networks: guarded.Networks, Guards: []Guard{attA.Guard(), attC.Guard()}}))
	spoof()
	if got := neighMAC(t, c.leader, ipA); got != macB.String() {
		t.Errorf("without B's guard, C's neighbour entry for A is %q, want B's MAC %s (is the test still testing?)", got, macB)
	}
	if got := neighMAC(t, c.leader, gw4); got != macB.String() {
		t.Errorf("without B's guard, C's neighbour entry for the gateway is %q, want B's MAC %s", got, macB)
	}
	ra()
	testenv.Eventually(t, 5*time.Second, func() error {
		if out := mustSh(t, c.leader, "ip", "-6", "addr", "show", "dev", GuestIfName); !strings.Contains(out, "2001:db8:1:") {
			return fmt.Errorf("without B's guard C did not take B's router advertisement (is the test still testing?):\n%s", out)
		}
		return nil
	})
}

// neighMAC is the MAC of the neighbour entry for addr in the namespace of pid
// ("" when there is none).
func neighMAC(t *testing.T, pid int, addr netip.Addr) string {
	t.Helper()
	f := strings.Fields(mustSh(t, pid, "ip", "neigh", "show", addr.String(), "dev", GuestIfName))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			return f[i+1]
		}
	}
	return ""
}

// Hundreds of guards go in as one batch (the kernel's replies to it outgrow a
// socket's default receive buffer) and read back without drift.
func TestGuardRulesMany(t *testing.T) {
	ctx := context.Background()
	h, hp := testHost(t)
	rs := Ruleset{Networks: []NATNetwork{{Name: "lan", Bridge: "br-lan", Subnet4: mustPrefix("10.88.0.0/16"), Subnet6: mustPrefix("fd88::/64")}}}
	for i := range 300 {
		name := fmt.Sprintf("m%03d", i)
		a := Attachment{Machine: name, Bridge: "br-lan", Addr4: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 88, byte(i / 200), byte(2 + i%200)}), 16),
			Addr6: netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x88, 14: byte(i >> 8), 15: byte(i)}), 64)}
		rs.Guards = append(rs.Guards, a.Guard())
	}
	start := time.Now()
	must(t, h.ApplyRules(ctx, rs))
	t.Logf("ApplyRules with %d guards: %s", len(rs.Guards), time.Since(start))
	start = time.Now()
	if d, err := h.RulesDrift(ctx, rs); err != nil || d != nil {
		t.Fatalf("drift: %q, %v", d, err)
	}
	t.Logf("RulesDrift: %s", time.Since(start))
	if got, err := h.Rules(ctx); err != nil || len(got.Guards) != len(rs.Guards) {
		t.Fatalf("Rules read back %d guards, %v", len(got.Guards), err)
	}
	must(t, h.ApplyRules(ctx, rs))
	must(t, h.ApplyRules(ctx, Ruleset{}))
	if out := mustSh(t, hp.pid, "nft", "list", "tables"); strings.Contains(out, TableName) {
		t.Fatalf("tables left:\n%s", out)
	}
}
