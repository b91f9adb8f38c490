package units

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/godbus/dbus/v5"
)

const (
	resolvedDest    = "org.freedesktop.resolve1"
	resolvedPath    = dbus.ObjectPath("/org/freedesktop/resolve1")
	resolvedManager = "org.freedesktop.resolve1.Manager"
)

// ResolvedAvailable reports whether systemd-resolved is on the system bus.
func (s *Systemd) ResolvedAvailable(ctx context.Context) bool {
	var has bool
	err := s.conn.BusObject().CallWithContext(ctx, busDest+".NameHasOwner", 0, resolvedDest).Store(&has)
	if err == nil && has {
		return true
	}
	// resolved may be bus-activatable without running yet.
	var names []string
	if err := s.conn.BusObject().CallWithContext(ctx, busDest+".ListActivatableNames", 0).Store(&names); err == nil {
		for _, n := range names {
			if n == resolvedDest {
				return true
			}
		}
	}
	return false
}

// linkDNS is one (family, address) entry of SetLinkDNS.
type linkDNS struct {
	Family  int32
	Address []byte
}

// linkDomain is one (domain, routing only) entry of SetLinkDomains.
type linkDomain struct {
	Domain      string
	RoutingOnly bool
}

// SetLinkDNS tells systemd-resolved that the link (a network's bridge) has
// the DNS servers servers, for the domain domain: queries for NAME.DOMAIN
// (and reverse lookups that resolved routes there) go to them. Equivalent to
// `resolvectl dns BRIDGE GATEWAY; resolvectl domain BRIDGE DOMAIN`, what
// Incus does for its bridges. The settings last as long as the link does;
// resolved forgets them when it is deleted.
func (s *Systemd) SetLinkDNS(ctx context.Context, ifindex int, servers []netip.Addr, domain string) error {
	obj := s.conn.Object(resolvedDest, resolvedPath)
	var dnsList []linkDNS
	for _, a := range servers {
		fam := int32(2) // AF_INET
		if a.Is6() {
			fam = 10 // AF_INET6
		}
		dnsList = append(dnsList, linkDNS{Family: fam, Address: a.AsSlice()})
	}
	if err := obj.CallWithContext(ctx, resolvedManager+".SetLinkDNS", 0, int32(ifindex), dnsList).Err; err != nil {
		return fmt.Errorf("systemd-resolved: SetLinkDNS on link %d: %w", ifindex, err)
	}
	var doms []linkDomain
	if domain != "" {
		doms = []linkDomain{{Domain: domain, RoutingOnly: false}}
	}
	if err := obj.CallWithContext(ctx, resolvedManager+".SetLinkDomains", 0, int32(ifindex), doms).Err; err != nil {
		return fmt.Errorf("systemd-resolved: SetLinkDomains on link %d: %w", ifindex, err)
	}
	return nil
}
