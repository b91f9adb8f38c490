package spec

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParsePort reads the short form of a port forward:
// [HOSTADDRESS:]HOSTPORT[:MACHINEPORT][/PROTOCOL], where an IPv6 host address is in
// brackets. With two numbers the first is the host's port (as in docker -p):
//
//	80            host 80 → machine 80, tcp
//	8080:80       host 8080 → machine 80
//	127.0.0.1:8080:80/tcp
//	[::1]:5353:53/udp
func ParsePort(s string) (Port, error) {
	bad := func(why string) (Port, error) {
		return Port{}, fmt.Errorf("%q is not a port forward (%s): write [HOSTADDRESS:]HOSTPORT[:MACHINEPORT][/tcp|/udp], e.g. 8080:80 or 127.0.0.1:8080:80/tcp", s, why)
	}
	var p Port
	rest := strings.TrimSpace(s)
	if r, proto, ok := strings.Cut(rest, "/"); ok {
		switch Protocol(proto) {
		case TCP, UDP:
			p.Protocol = Protocol(proto)
		default:
			return bad(fmt.Sprintf("protocol %q is not tcp or udp", proto))
		}
		rest = r
	}
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]")
		if end < 0 || len(rest) <= end+1 || rest[end+1] != ':' {
			return bad("an IPv6 address in brackets must be followed by :HOSTPORT")
		}
		a, err := netip.ParseAddr(rest[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return bad(fmt.Sprintf("%s is not an IPv6 address", rest[1:end]))
		}
		p.HostAddress = a
		rest = rest[end+2:]
		if strings.Count(rest, ":") != 1 {
			return bad("an address needs both HOSTPORT and MACHINEPORT")
		}
	}
	parts := strings.Split(rest, ":")
	if len(parts) == 3 {
		a, err := netip.ParseAddr(parts[0])
		if err != nil || !a.Is4() {
			return bad(fmt.Sprintf("%s is not an IPv4 address (put IPv6 addresses in brackets)", parts[0]))
		}
		p.HostAddress = a
		parts = parts[1:]
	}
	if len(parts) > 2 {
		return bad("too many ':'")
	}
	nums := make([]int, len(parts))
	for i, part := range parts {
		n, err := strconv.Atoi(part)
		if err != nil || n < 1 || n > 65535 {
			return bad(fmt.Sprintf("%q is not a port number from 1 to 65535", part))
		}
		nums[i] = n
	}
	p.HostPort = nums[0]
	if len(nums) == 2 {
		p.MachinePort = nums[1]
	}
	return p, nil
}

// String formats a port in its short form.
func (p Port) String() string {
	var b strings.Builder
	if p.HostAddress.IsValid() {
		if p.HostAddress.Is6() {
			b.WriteString("[" + p.HostAddress.String() + "]:")
		} else {
			b.WriteString(p.HostAddress.String() + ":")
		}
	}
	b.WriteString(strconv.Itoa(p.HostPort))
	if p.MachinePort != 0 {
		b.WriteString(":" + strconv.Itoa(p.MachinePort))
	}
	if p.Protocol != "" {
		b.WriteString("/" + string(p.Protocol))
	}
	return b.String()
}
