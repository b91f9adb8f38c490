package netconf

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
)

var lan = NATNetwork{Name: "lan", Bridge: "br-lan", Subnet4: mustPrefix("10.88.0.0/24"), Subnet6: mustPrefix("fd88::/64"), Masquerade: true}
var iso = NATNetwork{Name: "isolated", Bridge: "br-isolated", Subnet4: mustPrefix("10.89.0.0/24")}

// Guards of machines with both families, with IPv4 only, with IPv6 only (no
// IPv4 and no ARP at all), and with a set MAC and a shortened port name.
var guards = []Guard{
	{Machine: "web", HostIf: "vb-web", MAC: MAC("web"), Addr4: mustAddr("10.88.0.2"), Addr6: mustAddr("fd88::2")},
	{Machine: "dns", HostIf: "vb-dns", MAC: MAC("dns"), Addr4: mustAddr("10.89.0.5")},
	{Machine: "v6", HostIf: "vb-v6", MAC: MAC("v6"), Addr6: mustAddr("fd88::6")},
	{Machine: "a-very-long-machine", HostIf: HostIfName("a-very-long-machine"), MAC: mustMAC("02:42:0a:58:00:03"), Addr4: mustAddr("10.88.0.3"), Addr6: mustAddr("fd88::3")},
}

var goldenRulesets = map[string]Ruleset{
	// A network without NAT or forwards still gets its bridge guarded.
	"isolated": {Networks: []NATNetwork{iso}},
	"nat":      {Networks: []NATNetwork{lan, iso}},
	"forwards": {
		Networks: []NATNetwork{lan, iso},
		Forwards: []Forward{
			{Machine: "web", Proto: "tcp", HostPort: 8080, Addr: mustAddr("10.88.0.2"), Port: 80},
			{Machine: "web", Proto: "tcp", HostPort: 8080, Addr: mustAddr("fd88::2"), Port: 80},
			{Machine: "dns", Proto: "udp", HostAddr: mustAddr("192.0.2.10"), HostPort: 53, Addr: mustAddr("10.89.0.5"), Port: 53},
			{Machine: "db", Proto: "tcp", HostAddr: mustAddr("127.0.0.1"), HostPort: 5432, Addr: mustAddr("10.88.0.3"), Port: 5432},
			// [::1] is LoopbackProxy's: no kernel rule.
			{Machine: "db", Proto: "tcp", HostAddr: mustAddr("::1"), HostPort: 5432, Addr: mustAddr("fd88::3"), Port: 5432},
		},
	},
	// Anti-spoofing: the table bridge berth beside the inet one.
	"guards": {Networks: []NATNetwork{lan, iso}, Guards: guards},
}

func TestPlanGolden(t *testing.T) {
	for name, rs := range goldenRulesets {
		t.Run(name, func(t *testing.T) {
			if err := rs.Validate(); err != nil {
				t.Fatal(err)
			}
			// The golden file is what ApplyRules installs, read back from the
			// compiled expressions (TestInstalledGolden writes it under
			// -update); render, the account the docs quote, says the same.
			got := render(tables(rs))
			path := filepath.Join("testdata", "rules", name+".nft")
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if d := testenv.Diff(string(want), got); d != "" {
				t.Errorf("render differs from %s, the installed rules:\n%s", path, d)
			}
			// The plan does not depend on the order of the input.
			rev := Ruleset{Networks: reversed(rs.Networks), Forwards: reversed(rs.Forwards), Guards: reversed(rs.Guards)}
			if again := render(tables(rev)); again != got {
				t.Errorf("plan depends on input order:\n%s", again)
			}
		})
	}
}

func reversed[T any](s []T) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

func TestRulesetValidate(t *testing.T) {
	fw := func(f Forward) Ruleset { return Ruleset{Networks: []NATNetwork{lan}, Forwards: []Forward{f}} }
	web := Forward{Machine: "web", Proto: "tcp", HostPort: 8080, Addr: mustAddr("10.88.0.2"), Port: 80}
	mod := func(f func(*Forward)) Forward { w := web; f(&w); return w }
	tests := []struct {
		name string
		rs   Ruleset
		err  error
		msg  string
	}{
		{"ok", fw(web), nil, ""},
		{"proto", fw(mod(func(f *Forward) { f.Proto = "sctp" })), ErrInvalid, "want tcp or udp"},
		{"port", fw(mod(func(f *Forward) { f.Port = 0 })), ErrInvalid, "ports"},
		{"families", fw(mod(func(f *Forward) { f.HostAddr = mustAddr("::1") })), ErrInvalid, "different IP versions"},
		{"off-network", fw(mod(func(f *Forward) { f.Addr = mustAddr("10.99.0.2") })), ErrInvalid, "none of the networks"},
		{"same port", Ruleset{Networks: []NATNetwork{lan}, Forwards: []Forward{web, mod(func(f *Forward) { f.Machine = "other"; f.Addr = mustAddr("10.88.0.3") })}}, ErrExists, `forwarded to machine "web"`},
		{"wildcard and specific", Ruleset{Networks: []NATNetwork{lan}, Forwards: []Forward{web, mod(func(f *Forward) { f.HostAddr = mustAddr("127.0.0.1") })}}, ErrExists, "already forwarded"},
		{"v4 and v6 on one port", Ruleset{Networks: []NATNetwork{lan}, Forwards: []Forward{web, mod(func(f *Forward) { f.Addr = mustAddr("fd88::2") })}}, nil, ""},
		{"tcp and udp on one port", Ruleset{Networks: []NATNetwork{lan}, Forwards: []Forward{web, mod(func(f *Forward) { f.Proto = "udp" })}}, nil, ""},
		{"subnet with host bits", Ruleset{Networks: []NATNetwork{{Name: "x", Bridge: "br-x", Subnet4: mustPrefix("10.0.0.1/24")}}}, ErrInvalid, "10.0.0.0/24"},
		{"shared bridge", Ruleset{Networks: []NATNetwork{lan, {Name: "b", Bridge: "br-lan"}}}, ErrInvalid, "own bridge"},
		{"guards", Ruleset{Guards: guards}, nil, ""},
		{"guard twice", Ruleset{Guards: []Guard{guards[0], guards[0]}}, ErrInvalid, "listed twice"},
		{"guards on one port", Ruleset{Guards: []Guard{guards[0], modGuard(func(g *Guard) { g.Machine = "other" })}}, ErrInvalid, "another machine's"},
		{"guard without a MAC", Ruleset{Guards: []Guard{modGuard(func(g *Guard) { g.MAC = nil })}}, ErrInvalid, "6-byte unicast"},
		{"guard with a multicast MAC", Ruleset{Guards: []Guard{modGuard(func(g *Guard) { g.MAC = mustMAC("01:00:5e:00:00:01") })}}, ErrInvalid, "6-byte unicast"},
		{"guard with a bad port", Ruleset{Guards: []Guard{modGuard(func(g *Guard) { g.HostIf = "vb-a-name-too-long" })}}, ErrInvalid, "not a valid interface name"},
		{"guard with swapped families", Ruleset{Guards: []Guard{modGuard(func(g *Guard) { g.Addr4, g.Addr6 = g.Addr6, g.Addr4 })}}, ErrInvalid, "want a unicast IPv4"},
		{"guard for ::", Ruleset{Guards: []Guard{modGuard(func(g *Guard) { g.Addr6 = mustAddr("::") })}}, ErrInvalid, "want a unicast IPv6"},
		{"guard of a long name", Ruleset{Guards: []Guard{modGuard(func(g *Guard) { g.Machine = strings.Repeat("m", 65) })}}, ErrInvalid, "at most 64 bytes"},
	}
	for _, tt := range tests {
		err := tt.rs.Validate()
		if tt.err == nil {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: want %v mentioning %q, got %v", tt.name, tt.err, tt.msg, err)
		}
	}
}

func modGuard(f func(*Guard)) Guard {
	g := guards[0]
	g.MAC = append(net.HardwareAddr{}, g.MAC...)
	f(&g)
	return g
}

func TestTables(t *testing.T) {
	// Each table exists only when something is wanted in it.
	for _, c := range []struct {
		rs   Ruleset
		want []string
	}{
		{Ruleset{}, nil},
		{Ruleset{Networks: []NATNetwork{lan}}, []string{familyInet}},
		{Ruleset{Guards: guards}, []string{familyBridge}},
		{Ruleset{Networks: []NATNetwork{lan}, Guards: guards}, []string{familyInet, familyBridge}},
	} {
		var got []string
		for _, tb := range tables(c.rs) {
			got = append(got, tb.family)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("tables of %+v: %q, want %q", c.rs, got, c.want)
		}
	}
}

func TestLinkLocal(t *testing.T) {
	// The kernel's (and RFC 4291's) modified EUI-64: the universal/local bit
	// flipped, ff:fe in the middle.
	for mac, want := range map[string]string{
		"52:54:00:12:34:56": "fe80::5054:ff:fe12:3456",
		"02:42:0a:58:00:03": "fe80::42:aff:fe58:3",
		"00:00:00:00:00:01": "fe80::200:ff:fe00:1",
	} {
		if got := (Guard{MAC: mustMAC(mac)}).LinkLocal(); got != mustAddr(want) {
			t.Errorf("LinkLocal(%s) = %s, want %s", mac, got, want)
		}
	}
	if got := (Guard{}).LinkLocal(); got.IsValid() {
		t.Errorf("LinkLocal without a MAC = %s", got)
	}
}

func TestAttachmentGuard(t *testing.T) {
	a := Attachment{Machine: "web", Bridge: "br-lan", Addr4: mustPrefix("10.88.0.2/24"), Addr6: mustPrefix("fd88::2/64")}
	want := Guard{Machine: "web", HostIf: "vb-web", MAC: MAC("web"), Addr4: mustAddr("10.88.0.2"), Addr6: mustAddr("fd88::2")}
	if got := a.Guard(); !reflect.DeepEqual(got, want) {
		t.Errorf("Guard() = %+v, want %+v", got, want)
	}
	a.Addr6, a.HostIf, a.MAC = netip.Prefix{}, "vb-x", mustMAC("02:00:00:00:00:01")
	want.Addr6, want.HostIf, want.MAC = netip.Addr{}, "vb-x", mustMAC("02:00:00:00:00:01")
	if got := a.Guard(); !reflect.DeepEqual(got, want) {
		t.Errorf("Guard() = %+v, want %+v", got, want)
	}
}

func TestCommentsRoundTrip(t *testing.T) {
	rs := goldenRulesets["forwards"]
	for _, n := range rs.Networks {
		got, ok := parseNetworkComment(networkComment(n))
		if !ok || !reflect.DeepEqual(got, n) {
			t.Errorf("network %s: read back %+v", n.Name, got)
		}
	}
	for _, f := range rs.Forwards {
		got, ok := parseForwardComment("forward " + f.String())
		if !ok || got != f {
			t.Errorf("forward %s: read back %+v", f, got)
		}
	}
	for _, g := range guards {
		got, ok := parseGuardComment(g.String())
		if !ok || !reflect.DeepEqual(got, g) {
			t.Errorf("guard %s: read back %+v", g, got)
		}
	}
	for _, bad := range []string{"machine web: only its MAC 02:00:00:00:00:01", "machine web port vb-web mac 02:00:00:00:00:01 ipv4 fd88::2", "machine web port vb-web mac x"} {
		if g, ok := parseGuardComment(bad); ok {
			t.Errorf("parseGuardComment(%q) = %+v, want no guard", bad, g)
		}
	}
}
