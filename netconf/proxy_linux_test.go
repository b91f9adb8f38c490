package netconf

import (
	"net/netip"
	"slices"
	"testing"
)

func TestLoopbackForwards(t *testing.T) {
	a4, a6, b4 := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::2"), netip.MustParseAddr("10.0.0.3")
	lo4, lo6 := netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()
	f := func(m, proto string, host netip.Addr, port uint16, addr netip.Addr) Forward {
		return Forward{Machine: m, Proto: proto, HostAddr: host, HostPort: port, Addr: addr, Port: 80}
	}
	for _, tc := range []struct {
		name string
		in   []Forward
		want []Forward
	}{
		{"dual stack: the IPv6 forward serves ::1",
			[]Forward{f("a", "tcp", netip.Addr{}, 80, a4), f("a", "tcp", netip.Addr{}, 80, a6)},
			[]Forward{f("a", "tcp", netip.Addr{}, 80, a6)}},
		{"IPv4 only: relayed to the IPv4 address",
			[]Forward{f("b", "tcp", netip.Addr{}, 81, b4)},
			[]Forward{f("b", "tcp", netip.Addr{}, 81, b4)}},
		{"IPv4 only, udp and tcp on one port: one relay each",
			[]Forward{f("b", "tcp", netip.Addr{}, 53, b4), f("b", "udp", netip.Addr{}, 53, b4)},
			[]Forward{f("b", "tcp", netip.Addr{}, 53, b4), f("b", "udp", netip.Addr{}, 53, b4)}},
		{"a host address of its own: no relay on ::1",
			[]Forward{f("b", "tcp", lo4, 82, b4), f("b", "tcp", netip.MustParseAddr("192.0.2.1"), 83, b4)},
			nil},
		{"pinned to ::1",
			[]Forward{f("a", "tcp", lo6, 84, a6)},
			[]Forward{f("a", "tcp", lo6, 84, a6)}},
	} {
		if got := loopbackForwards(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, got, tc.want)
		}
	}
}
