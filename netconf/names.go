package netconf

import (
	"crypto/sha256"
	"net"

	"github.com/berthd/berth/internal/rundir"
)

// The prefixes of the links berth makes. "vb-" is what systemd-nspawn calls the
// host side of a veth that it puts on a bridge (--network-bridge), so tools and
// people that know nspawn recognise berth's links; the guest side is always host0.
const (
	hostIfPrefix = "vb-"
	// GuestIfName is the name of a machine's interface inside its namespace.
	GuestIfName = "host0"
)

// HostIfName returns the name of the host side of machine's veth: "vb-" and the
// machine name, or, when that is longer than 15 bytes or holds a character an
// interface name cannot have, a prefix of it followed by a hash of the whole
// machine name (rundir.LinkName), so that two machines never get the same link
// name.
func HostIfName(machine string) string { return rundir.LinkName(hostIfPrefix, machine) }

// MAC returns the stable MAC address of machine's host0: derived from the
// machine name, locally administered and unicast, the same on every start, so
// that neighbours' ARP caches and anything in the guest keyed on the MAC (udev
// rules, DHCP leases) survive restarts. systemd-nspawn derives it from the host's
// machine-id and the machine name with SipHash; berth leaves out the machine-id
// because its bridges are host-internal (the MAC never reaches another host's
// L2 segment) and because a pure function can be computed by any process, e.g.
// to show it in `berth list` without asking the host.
func MAC(machine string) net.HardwareAddr { return derivedMAC("host0", machine) }

// hostMAC is the MAC of the host side of machine's veth.
func hostMAC(machine string) net.HardwareAddr { return derivedMAC("vb", machine) }

// bridgeMAC is the MAC a bridge berth creates gets. A Linux bridge without a set
// address takes the smallest MAC of its ports, so its address (the guests'
// gateway) would change whenever a machine starts or stops and guests would keep
// a stale ARP entry for their gateway; a set address never changes.
func bridgeMAC(bridge string) net.HardwareAddr { return derivedMAC("bridge", bridge) }

func derivedMAC(kind, name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("berth-mac\x00" + kind + "\x00" + name))
	mac := net.HardwareAddr(sum[:6])
	mac[0] &^= 0x01 // unicast
	mac[0] |= 0x02  // locally administered
	return mac
}
