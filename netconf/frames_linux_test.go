package netconf

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Frames built by hand, sent and seen through packet sockets in the test's
// namespaces: what a hostile guest can put on its link, without any tool that
// would refuse to.

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100
)

func ether(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	b := append(append(append([]byte{}, dst...), src...), byte(typ>>8), byte(typ))
	return append(b, payload...)
}

// vlanEther is an 802.1Q-tagged frame of VLAN vid.
func vlanEther(dst, src net.HardwareAddr, vid uint16, typ uint16, payload []byte) []byte {
	tag := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, vid), typ)
	return ether(dst, src, etherTypeVLAN, append(tag, payload...))
}

// arpPacket is an Ethernet/IPv4 ARP packet.
func arpPacket(op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := []byte{0, 1, 0x08, 0x00, 6, 4, byte(op >> 8), byte(op)}
	b = append(b, sha...)
	b = append(b, spa.AsSlice()...)
	b = append(b, tha...)
	return append(b, tpa.AsSlice()...)
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// ipv4UDP is an IPv4 UDP datagram (without UDP checksum, which IPv4 allows).
func ipv4UDP(src, dst netip.Addr, sport, dport uint16, data []byte) []byte {
	udp := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, sport), dport)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(data)))
	udp = append(udp, 0, 0)
	udp = append(udp, data...)
	h := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, unix.IPPROTO_UDP, 0, 0}
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(udp)))
	h = append(append(h, src.AsSlice()...), dst.AsSlice()...)
	binary.BigEndian.PutUint16(h[10:], checksum(h))
	return append(h, udp...)
}

// ipv6Packet is an IPv6 packet whose upper layer (after any extension headers
// in payload) is next; for ICMPv6 and UDP the checksum is filled in.
func ipv6Packet(src, dst netip.Addr, next byte, payload []byte) []byte {
	h := make([]byte, 8, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = next, 255
	h = append(append(h, src.AsSlice()...), dst.AsSlice()...)
	p := append([]byte{}, payload...)
	var sum int
	switch next {
	case unix.IPPROTO_ICMPV6:
		sum = 2
	case unix.IPPROTO_UDP:
		sum = 6
	default:
		return append(h, p...)
	}
	pseudo := append(append([]byte{}, src.AsSlice()...), dst.AsSlice()...)
	pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(p)))
	pseudo = append(pseudo, 0, 0, 0, next)
	binary.BigEndian.PutUint16(p[sum:], checksum(append(pseudo, p...)))
	return append(h, p...)
}

func udp6(sport, dport uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, sport), dport)
	b = binary.BigEndian.AppendUint16(b, uint16(8+len(data)))
	return append(append(b, 0, 0), data...)
}

// icmp6ND is a neighbour solicitation (135) or advertisement (136) for target,
// with a link-layer address option when lladdr is set.
func icmp6ND(typ byte, flags byte, target netip.Addr, lladdr net.HardwareAddr) []byte {
	b := []byte{typ, 0, 0, 0, flags, 0, 0, 0}
	b = append(b, target.AsSlice()...)
	if lladdr != nil {
		opt := byte(1) // source link-layer address
		if typ == 136 {
			opt = 2 // target link-layer address
		}
		b = append(append(b, opt, 1), lladdr...)
	}
	return b
}

// icmp6RAPacket is a router advertisement: a default router for 30 minutes, and an
// autonomous (SLAAC) prefix.
func icmp6RAPacket(prefix netip.Prefix, lladdr net.HardwareAddr) []byte {
	b := []byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}
	pi := []byte{3, 4, byte(prefix.Bits()), 0xc0}
	pi = binary.BigEndian.AppendUint32(pi, 3600) // valid
	pi = binary.BigEndian.AppendUint32(pi, 3600) // preferred
	pi = append(pi, 0, 0, 0, 0)
	pi = append(pi, prefix.Addr().AsSlice()...)
	b = append(b, pi...)
	return append(append(b, 1, 1), lladdr...)
}

// solicitedNode is the solicited-node multicast address of a (RFC 4291 2.7.1).
func solicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
}

// packetConn is a raw packet socket on one interface of a namespace.
type packetConn struct {
	fd      int
	ifindex int
}

func openPacket(t *testing.T, pid int, ifname string) *packetConn {
	t.Helper()
	var pc packetConn
	err := inPid(pid, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		pc = packetConn{fd: fd, ifindex: ifi.Index}
		return nil
	})
	if err != nil {
		t.Fatalf("packet socket on %s in netns of %d: %v", ifname, pid, err)
	}
	t.Cleanup(func() { unix.Close(pc.fd) })
	return &pc
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (pc *packetConn) send(t *testing.T, frame []byte) {
	t.Helper()
	if err := unix.Sendto(pc.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: pc.ifindex, Halen: 6}); err != nil {
		t.Fatalf("send a frame: %v", err)
	}
}

// received returns every frame that arrives (not the ones sent from this
// interface) until quiet passes without one.
func (pc *packetConn) received(t *testing.T, quiet time.Duration) [][]byte {
	t.Helper()
	tv := unix.NsecToTimeval(quiet.Nanoseconds())
	if err := unix.SetsockoptTimeval(pc.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	buf := make([]byte, 65536)
	for {
		n, from, err := unix.Recvfrom(pc.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return out
		}
		if err != nil {
			t.Fatalf("receive a frame: %v", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		out = append(out, append([]byte{}, buf[:n]...))
	}
}

// newMarker is 14 random bytes to put in a frame and find again where it
// arrives (14 fill an ND option of 16 bytes).
func newMarker() []byte {
	m := make([]byte, 14)
	_, _ = rand.Read(m)
	return m
}

func containsMarker(frames [][]byte, m []byte) bool {
	for _, f := range frames {
		if bytes.Contains(f, m) {
			return true
		}
	}
	return false
}
