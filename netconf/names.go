package netconf

import (
	"crypto/sha256"
	"encoding/base32"
	"net"
	"strings"
)

// Interface names are limited to IFNAMSIZ-1 = 15 bytes by the kernel.
const maxIfName = 15

// hashLen is how many characters of hash a shortened name ends with: 7 base32
// characters are 35 bits, so even among a thousand long names that share their
// first characters the chance of any two colliding is about 1 in 70,000
// (nspawn's 4 base64 characters, 24 bits, would give 3%). Attach still checks
// that a link it finds is the machine's own and refuses a clash.
const hashLen = 7

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
// machine name, so that two machines never get the same link name.
func HostIfName(machine string) string { return ifName(hostIfPrefix, machine) }

// ifName joins prefix and name and, when the result is not a usable interface
// name as it is, keeps as much of it as fits and appends a hash of name.
func ifName(prefix, name string) string {
	full := prefix + name
	if len(full) <= maxIfName && validIfChars(name) {
		return full
	}
	keep := maxIfName - hashLen
	var b strings.Builder
	b.WriteString(prefix)
	for i := 0; i < len(name) && b.Len() < keep; i++ {
		c := name[i]
		if !validIfChar(c) {
			c = '-'
		}
		b.WriteByte(c)
	}
	b.WriteString(shortHash(name))
	return b.String()
}

// validIfChar reports whether c may appear in an interface name: the kernel
// refuses '/', ':' and white space, and we also keep to printable ASCII so that
// names stay readable in `ip link` and usable in shells.
func validIfChar(c byte) bool {
	return c > ' ' && c < 0x7f && c != '/' && c != ':' && c != '%'
}

func validIfChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if !validIfChar(s[i]) {
			return false
		}
	}
	return s != "" && s != "." && s != ".."
}

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func shortHash(name string) string {
	sum := sha256.Sum256([]byte("berth-ifname\x00" + name))
	return lowerBase32.EncodeToString(sum[:])[:hashLen]
}

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
