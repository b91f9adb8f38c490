package netconf

import (
	"context"
	"errors"
	"fmt"
	"github.com/berthd/berth/internal/revert"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The alias (IFLA_IFALIAS, `ip link show` prints it as "alias …") marks the
// links berth made, so that berth never changes or deletes a link of the same
// name that someone else made, and so drift checks know a link is theirs.
const aliasPrefix = "berth "

func bridgeAlias(b Bridge) string {
	if b.Network == "" {
		return aliasPrefix + "bridge"
	}
	return aliasPrefix + "network " + b.Network
}

func machineAlias(machine string) string { return aliasPrefix + "machine " + machine }

// EnsureBridge makes the host's bridge match b and is safe to call again at any
// time. For a managed bridge (one with a gateway) it creates the bridge when it
// is missing, gives it exactly b's gateway addresses (removing others of the
// same kind, keeping IPv6 link-local ones), sets the MTU when b has one, and
// brings it up; a bridge of that name that berth did not make is an error, never
// changed. For a bridge without a gateway it only checks that the bridge exists.
// Equivalent to `ip link add NAME type bridge; ip addr add GW dev NAME; ip link
// set NAME up`.
func (h *Host) EnsureBridge(ctx context.Context, b Bridge) error {
	if err := b.Validate(); err != nil {
		return err
	}
	link, err := h.nl.LinkByName(b.Name)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("%s: look up: %w", b.label(), err)
	}
	if link != nil && link.Type() != "bridge" {
		return fmt.Errorf("%s: a %s link of that name exists on the host; name the network's bridge differently: %w", b.label(), link.Type(), ErrExists)
	}
	if !b.Managed() {
		if link == nil {
			return fmt.Errorf("%s: does not exist; create it, or give the network a subnet so that berth makes its own bridge: %w", b.label(), ErrNotFound)
		}
		return nil
	}
	if link != nil && !strings.HasPrefix(link.Attrs().Alias, aliasPrefix) {
		return fmt.Errorf("%s: a bridge of that name exists and berth did not make it; name the network's bridge differently, or declare the network without a subnet to use that bridge as it is: %w", b.label(), ErrExists)
	}
	if link != nil && b.Network != "" {
		if other, ok := strings.CutPrefix(link.Attrs().Alias, aliasPrefix+"network "); ok && other != b.Network {
			return fmt.Errorf("%s: the bridge belongs to berth network %q; give each network its own bridge: %w", b.label(), other, ErrExists)
		}
	}

	r := revert.New()
	defer r.Fail()
	if link == nil {
		if err := h.checkSubnetsFree(ctx, b, 0); err != nil {
			return err
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = b.Name
		attrs.MTU = b.MTU
		attrs.HardwareAddr = bridgeMAC(b.Name)
		br := &netlink.Bridge{LinkAttrs: attrs}
		if err := h.nl.LinkAdd(br); err != nil {
			return fmt.Errorf("%s: create: %w", b.label(), err)
		}
		r.Add(func() { _ = h.nl.LinkDel(br) })
		if link, err = h.nl.LinkByName(b.Name); err != nil {
			return fmt.Errorf("%s: look up after create: %w", b.label(), err)
		}
		slog.DebugContext(ctx, "bridge created", "network", b.Network, "bridge", b.Name)
	}
	// The alias is set after creation because the kernel ignores IFLA_IFALIAS
	// in a request that creates a link.
	if want := bridgeAlias(b); link.Attrs().Alias != want {
		if err := h.nl.LinkSetAlias(link, want); err != nil {
			return fmt.Errorf("%s: set alias: %w", b.label(), err)
		}
	}
	if err := h.syncBridgeAddrs(ctx, b, link); err != nil {
		return err
	}
	// No duplicate address detection on the bridge: until its link-local
	// address has passed DAD the kernel sends no neighbour solicitations on it
	// for forwarded traffic, so IPv6 from outside to a machine (and back)
	// stalls for the first second or two after the first machine attaches and
	// the bridge gets a carrier. The bridge is berth's own segment; its
	// addresses are not shared with anyone to detect duplicates against.
	if err := h.setSysctl("net/ipv6/conf/"+b.Name+"/accept_dad", "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w", b.label(), err)
	}
	if b.MTU > 0 && link.Attrs().MTU != b.MTU {
		if err := h.nl.LinkSetMTU(link, b.MTU); err != nil {
			return fmt.Errorf("%s: set MTU %d: %w", b.label(), b.MTU, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("%s: bring up: %w", b.label(), err)
		}
	}
	r.Success()
	return nil
}

// syncBridgeAddrs gives the bridge exactly b's gateway addresses.
func (h *Host) syncBridgeAddrs(ctx context.Context, b Bridge, link netlink.Link) error {
	have, err := retryDump(ctx, func() ([]netlink.Addr, error) { return h.nl.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("%s: list addresses: %w", b.label(), err)
	}
	want := []netip.Prefix{}
	for _, p := range []netip.Prefix{b.Gateway4, b.Gateway6} {
		if p.IsValid() {
			want = append(want, p)
		}
	}
	present := map[netip.Prefix]bool{}
	for _, a := range have {
		p := toPrefix(a.IPNet)
		if p.Addr().IsLinkLocalUnicast() {
			continue // the kernel's own fe80:: address: NDP needs it
		}
		if slices.Contains(want, p) {
			present[p] = true
			continue
		}
		if err := h.nl.AddrDel(link, &a); err != nil {
			return fmt.Errorf("%s: remove address %s: %w", b.label(), p, err)
		}
		slog.InfoContext(ctx, "removed unexpected bridge address", "network", b.Network, "bridge", b.Name, "addr", p.String())
	}
	for _, p := range want {
		if present[p] {
			continue
		}
		if err := h.checkSubnetsFree(ctx, b, link.Attrs().Index); err != nil {
			return err
		}
		if err := h.nl.AddrReplace(link, toNetlinkAddr(p)); err != nil {
			return fmt.Errorf("%s: add address %s: %w", b.label(), p, err)
		}
	}
	return nil
}

// checkSubnetsFree refuses gateway addresses whose subnet overlaps an address
// on another interface of the host (other than the bridge itself, index self):
// a second connected route for the host's LAN would cut the host off from it,
// and the gateway address must not be in use already.
func (h *Host) checkSubnetsFree(ctx context.Context, b Bridge, self int) error {
	addrs, err := retryDump(ctx, func() ([]netlink.Addr, error) { return h.nl.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("%s: list host addresses: %w", b.label(), err)
	}
	for _, gw := range []netip.Prefix{b.Gateway4, b.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		for _, a := range addrs {
			if a.LinkIndex == self {
				continue
			}
			p := toPrefix(a.IPNet)
			if p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
				continue
			}
			if p.Addr() == gw.Addr() || p.Overlaps(gw.Masked()) {
				return fmt.Errorf("%s: subnet %s overlaps %s on host interface %s; choose another subnet for the network: %w",
					b.label(), gw.Masked(), p, h.linkName(a.LinkIndex), ErrExists)
			}
		}
	}
	return nil
}

func (h *Host) linkName(index int) string {
	if l, err := h.nl.LinkByIndex(index); err == nil {
		return l.Attrs().Name
	}
	return fmt.Sprintf("#%d", index)
}

// DeleteBridge removes the bridge berth made for a network. A missing bridge is
// success; a bridge berth did not make, or one that still has ports (machines
// attached), is an error and stays. Equivalent to `ip link del NAME`.
func (h *Host) DeleteBridge(ctx context.Context, name string) error {
	link, err := h.nl.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bridge %q: look up: %w", name, err)
	}
	if link.Type() != "bridge" || !strings.HasPrefix(link.Attrs().Alias, aliasPrefix) {
		return fmt.Errorf("bridge %q: not a bridge berth made; leaving it alone: %w", name, ErrExists)
	}
	ports, err := h.bridgePorts(ctx, link.Attrs().Index)
	if err != nil {
		return fmt.Errorf("bridge %q: %w", name, err)
	}
	if len(ports) > 0 {
		return fmt.Errorf("bridge %q: still has ports %s; stop or detach their machines first: %w", name, strings.Join(ports, ", "), ErrBusy)
	}
	if err := h.nl.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("bridge %q: delete: %w", name, err)
	}
	return nil
}

func (h *Host) bridgePorts(ctx context.Context, index int) ([]string, error) {
	links, err := retryDump(ctx, h.nl.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	return ports, nil
}

// BridgeExists reports whether a bridge of that name exists (made by berth or
// not): whether a network's bridge is to be created rather than repaired.
func (h *Host) BridgeExists(ctx context.Context, name string) (bool, error) {
	link, err := h.nl.LinkByName(name)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("bridge %q: look up: %w", name, err)
	}
	return link.Type() == "bridge", nil
}

// BridgeDrift compares the host's bridge with b and describes each difference,
// for the daemon's drift detection; nil means the bridge is as EnsureBridge
// would leave it.
func (h *Host) BridgeDrift(ctx context.Context, b Bridge) ([]string, error) {
	link, err := h.nl.LinkByName(b.Name)
	if isNotFound(err) {
		return []string{fmt.Sprintf("bridge %s is missing", b.Name)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: look up: %w", b.label(), err)
	}
	if link.Type() != "bridge" {
		return []string{fmt.Sprintf("%s is a %s, not a bridge", b.Name, link.Type())}, nil
	}
	if !b.Managed() {
		return nil, nil
	}
	var drift []string
	if link.Attrs().Alias != bridgeAlias(b) {
		drift = append(drift, fmt.Sprintf("bridge %s is not marked as berth's (alias %q)", b.Name, link.Attrs().Alias))
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		drift = append(drift, fmt.Sprintf("bridge %s is down", b.Name))
	}
	if b.MTU > 0 && link.Attrs().MTU != b.MTU {
		drift = append(drift, fmt.Sprintf("bridge %s has MTU %d, want %d", b.Name, link.Attrs().MTU, b.MTU))
	}
	addrs, err := retryDump(ctx, func() ([]netlink.Addr, error) { return h.nl.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("%s: list addresses: %w", b.label(), err)
	}
	drift = append(drift, addrDrift("bridge "+b.Name, addrs, b.Gateway4, b.Gateway6)...)
	return drift, nil
}

// addrDrift compares a link's addresses (link-local ones aside) with want.
func addrDrift(what string, have []netlink.Addr, want ...netip.Prefix) []string {
	var drift []string
	seen := map[netip.Prefix]bool{}
	for _, a := range have {
		p := toPrefix(a.IPNet)
		if p.Addr().IsLinkLocalUnicast() {
			continue
		}
		seen[p] = true
		if !slices.Contains(want, p) {
			drift = append(drift, fmt.Sprintf("%s has unexpected address %s", what, p))
		}
	}
	for _, p := range want {
		if p.IsValid() && !seen[p] {
			drift = append(drift, fmt.Sprintf("%s lacks address %s", what, p))
		}
	}
	return drift
}

func toPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// toNetlinkAddr makes the address to add for p. IPv6 addresses skip duplicate
// address detection: berth hands them out uniquely, and DAD would keep them
// "tentative", unusable, for the first second or two of a machine's life.
func toNetlinkAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}
