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
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Attach connects the machine whose payload is process pid to its network: a
// veth pair with a.HostIf on the host, a port of a.Bridge and up, and host0 in
// the network namespace of pid, with a.MAC, the machine's addresses and default
// routes, and loopback up — all set from outside, so the guest's init finds its
// network ready. Equivalent to `ip link add vb-NAME type veth peer name host0
// netns PID; ip link set vb-NAME master BRIDGE up; nsenter -t PID -n ip addr add
// …; ip route add default via …`.
//
// Attach is idempotent and also repairs: called again for a running machine it
// keeps a correct veth, re-attaches it to the bridge, brings it up and puts back
// lost addresses and routes, and it recreates the pair when the host side was
// deleted. It refuses, without leaving anything behind, a machine address that
// is in use on the host and a host link of that name that is not this machine's
// own. On any failure a veth it made is removed again.
func (h *Host) Attach(ctx context.Context, pid int, a Attachment) error {
	a = a.withDefaults()
	if err := a.Validate(); err != nil {
		return err
	}
	fail := a.attachError
	if pid <= 0 {
		return fail("payload pid", fmt.Errorf("%d is not a process: %w", pid, ErrInvalid))
	}
	target, err := netns.GetFromPid(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("process %d is gone: %w", pid, ErrNotFound)
		}
		return fail("open the machine's network namespace", err)
	}
	defer target.Close()
	inside, err := netlink.NewHandleAt(target, unix.NETLINK_ROUTE)
	if err != nil {
		return fail("netlink in the machine's namespace", err)
	}
	defer inside.Close()

	bridge, err := h.findBridge(a.Bridge)
	if err != nil {
		return fail("find bridge", err)
	}

	r := revert.New()
	defer r.Fail()
	hostLink, err := h.ensureVeth(ctx, a, target, inside, bridge, r)
	if err != nil {
		return err
	}
	if err := h.joinBridge(ctx, a, hostLink, bridge); err != nil {
		return err
	}
	if err := configureGuest(ctx, inside, a); err != nil {
		return fail("configure "+GuestIfName, err)
	}
	r.Success()
	return nil
}

// attachError is how every failure of Attach reads: the machine, its bridge
// and the step that failed.
func (a Attachment) attachError(step string, err error) error {
	return fmt.Errorf("machine %q: attach to bridge %q: %s: %w", a.Machine, a.Bridge, step, err)
}

// findBridge looks up the network's bridge, which EnsureBridge made before.
func (h *Host) findBridge(name string) (netlink.Link, error) {
	bridge, err := h.nl.LinkByName(name)
	if isNotFound(err) {
		return nil, fmt.Errorf("bridge %q does not exist on the host (the network is not set up): %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if bridge.Type() != "bridge" {
		return nil, fmt.Errorf("%q is a %s, not a bridge: %w", name, bridge.Type(), ErrInvalid)
	}
	return bridge, nil
}

// ensureVeth returns the machine's host-side veth: the one there when it is
// this machine's own (a repair), else a new pair, whose removal it registers
// with r. A new pair is made only when the machine's addresses are free on the
// host and the machine's namespace has no host0 of someone else's.
func (h *Host) ensureVeth(ctx context.Context, a Attachment, target netns.NsHandle, inside *netlink.Handle, bridge netlink.Link, r *revert.Reverter) (netlink.Link, error) {
	hostLink, err := h.nl.LinkByName(a.HostIf)
	switch {
	case isNotFound(err):
		if err := h.checkAddrsFree(ctx, a); err != nil {
			return nil, a.attachError("check addresses", err)
		}
		if l, err := inside.LinkByName(GuestIfName); err == nil {
			return nil, a.attachError("create veth", fmt.Errorf("the machine's namespace already has a %s link %s that berth did not make: %w", l.Type(), GuestIfName, ErrExists))
		}
		hostLink, err = h.createVeth(a, target, bridge)
		if err != nil {
			return nil, a.attachError("create veth "+a.HostIf, err)
		}
		r.Add(func() { _ = h.nl.LinkDel(hostLink) })
	case err != nil:
		return nil, a.attachError("look up "+a.HostIf, err)
	default:
		err := h.checkOwnVeth(a, hostLink, target, inside)
		if errors.Is(err, errStaleVeth) && h.vethGone(hostLink) {
			// The machine's veth from its previous run: that run's
			// namespace ended with it, and the kernel frees a namespace
			// (and the veths in it) a moment later, in the background.
			return h.ensureVeth(ctx, a, target, inside, bridge, r)
		}
		if err != nil {
			return nil, a.attachError("check existing "+a.HostIf, err)
		}
	}
	return hostLink, nil
}

// joinBridge makes the machine's host-side veth a port of its bridge and brings
// it up. A guarded machine's port gets its guard first, so no frame of the
// machine passes the bridge unchecked.
func (h *Host) joinBridge(ctx context.Context, a Attachment, hostLink, bridge netlink.Link) error {
	if a.Guarded {
		if err := h.GuardPort(ctx, a.Guard()); err != nil {
			return a.attachError("guard "+a.HostIf, err)
		}
	}
	if hostLink.Attrs().MasterIndex != bridge.Attrs().Index {
		if err := h.nl.LinkSetMasterByIndex(hostLink, bridge.Attrs().Index); err != nil {
			return a.attachError("add "+a.HostIf+" to the bridge", err)
		}
	}
	if hostLink.Attrs().Flags&net.FlagUp == 0 {
		if err := h.nl.LinkSetUp(hostLink); err != nil {
			return a.attachError("bring up "+a.HostIf, err)
		}
	}
	return nil
}

// createVeth makes the pair with its far end already in the machine's
// namespace: creating host0 there directly (rather than creating it on the host
// and moving it) never puts a second "host0" in the host's namespace, so two
// machines starting at once cannot race for that name.
func (h *Host) createVeth(a Attachment, target netns.NsHandle, bridge netlink.Link) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = a.HostIf
	attrs.HardwareAddr = hostMAC(a.Machine)
	attrs.MTU = a.MTU
	veth := netlink.NewVeth(attrs)
	veth.PeerName = GuestIfName
	veth.PeerHardwareAddr = a.MAC
	veth.PeerNamespace = netlink.NsFd(target)
	if a.MTU == 0 {
		veth.MTU = bridge.Attrs().MTU // the network's
	}
	if err := h.nl.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("a link named %s appeared meanwhile: %w", a.HostIf, ErrExists)
		}
		return nil, err
	}
	link, err := h.nl.LinkByName(a.HostIf)
	if err != nil {
		return nil, err
	}
	if err := h.nl.LinkSetAlias(link, machineAlias(a.Machine)); err != nil {
		_ = h.nl.LinkDel(link)
		return nil, fmt.Errorf("set alias: %w", err)
	}
	// Let `ip link show vb-FULL-NAME` find a shortened link, as nspawn does.
	if full := hostIfPrefix + a.Machine; full != a.HostIf && len(full) < 128 {
		_ = h.nl.LinkAddAltName(link, full)
	}
	return link, nil
}

// errStaleVeth: the host link is this machine's veth, with its peer in
// another namespace than the machine's (a previous run's, or an instance
// still running).
var errStaleVeth = errors.New("the machine's veth of another run")

// vethGone waits up to a second for the kernel to free a previous run's veth
// with its namespace and reports whether it went. One that stays belongs to
// a namespace something still holds (an earlier instance still running):
// never removed from here.
func (h *Host) vethGone(link netlink.Link) bool {
	for i := 0; i < 100; i++ {
		if _, err := h.nl.LinkByIndex(link.Attrs().Index); isNotFound(err) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// checkOwnVeth accepts an existing host link only when it is this machine's
// veth and its peer is host0 in the machine's namespace; errStaleVeth when it
// is this machine's veth with its peer elsewhere.
func (h *Host) checkOwnVeth(a Attachment, link netlink.Link, target netns.NsHandle, inside *netlink.Handle) error {
	if link.Type() != "veth" || link.Attrs().Alias != machineAlias(a.Machine) {
		owner := "berth did not make it"
		if al := link.Attrs().Alias; strings.HasPrefix(al, aliasPrefix) {
			owner = "it is berth's " + strings.TrimPrefix(al, aliasPrefix)
		}
		return fmt.Errorf("a %s link named %s exists and %s; rename or remove it: %w", link.Type(), a.HostIf, owner, ErrExists)
	}
	guest, err := inside.LinkByName(GuestIfName)
	if err == nil {
		nsid, err := h.nl.GetNetNsIdByFd(int(target))
		if err == nil && nsid == link.Attrs().NetNsID && guest.Attrs().Index == link.Attrs().ParentIndex {
			return nil
		}
	}
	return fmt.Errorf("%s is connected to a different network namespace, not to this machine's (is an earlier instance of the machine still running?); stop it or remove the link with `ip link del %s`: %w (%w)", a.HostIf, a.HostIf, ErrExists, errStaleVeth)
}

// checkAddrsFree refuses machine addresses that an interface of the host has:
// the host would answer for them and the machine would be unreachable.
func (h *Host) checkAddrsFree(ctx context.Context, a Attachment) error {
	addrs, err := retryDump(ctx, func() ([]netlink.Addr, error) { return h.nl.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list host addresses: %w", err)
	}
	for _, want := range []netip.Prefix{a.Addr4, a.Addr6} {
		if !want.IsValid() {
			continue
		}
		for _, have := range addrs {
			if toPrefix(have.IPNet).Addr() == want.Addr() {
				return fmt.Errorf("address %s is already in use on the host (interface %s); give the machine another address: %w",
					want.Addr(), h.linkName(have.LinkIndex), ErrExists)
			}
		}
	}
	return nil
}

// configureGuest brings up lo and host0 in the machine's namespace and gives
// host0 exactly the machine's addresses and default routes.
func configureGuest(ctx context.Context, inside *netlink.Handle, a Attachment) error {
	if err := loopbackUp(inside); err != nil {
		return err
	}
	guest, err := inside.LinkByName(GuestIfName)
	if err != nil {
		return fmt.Errorf("find %s: %w", GuestIfName, err)
	}
	if guest.Attrs().Flags&net.FlagUp == 0 {
		if err := inside.LinkSetUp(guest); err != nil {
			return fmt.Errorf("bring up: %w", err)
		}
	}
	have, err := retryDump(ctx, func() ([]netlink.Addr, error) { return inside.AddrList(guest, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	present := map[netip.Prefix]bool{}
	for _, ad := range have {
		p := toPrefix(ad.IPNet)
		switch {
		case p.Addr().IsLinkLocalUnicast():
		case p == a.Addr4 || p == a.Addr6:
			present[p] = true
		default:
			// A stale address from an earlier attachment (the machine's
			// address changed): host0 is berth's, so it holds only ours.
			if err := inside.AddrDel(guest, &ad); err != nil {
				return fmt.Errorf("remove stale address %s: %w", p, err)
			}
		}
	}
	for _, p := range []netip.Prefix{a.Addr4, a.Addr6} {
		if p.IsValid() && !present[p] {
			if err := inside.AddrReplace(guest, toNetlinkAddr(p)); err != nil {
				return fmt.Errorf("add address %s: %w", p, err)
			}
		}
	}
	for _, gw := range []netip.Addr{a.Gateway4, a.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		rt := &netlink.Route{LinkIndex: guest.Attrs().Index, Gw: gw.AsSlice(), Scope: netlink.SCOPE_UNIVERSE}
		if gw.Is4() {
			rt.Family = netlink.FAMILY_V4
		} else {
			rt.Family = netlink.FAMILY_V6
		}
		if err := inside.RouteReplace(rt); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	return nil
}

func loopbackUp(inside *netlink.Handle) error {
	lo, err := inside.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := inside.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	return nil
}

// SetupLoopback brings up lo in the network namespace of process pid: all the
// network a machine with network mode "none" gets. Equivalent to `nsenter -t
// PID -n ip link set lo up`.
func SetupLoopback(ctx context.Context, pid int) error {
	target, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("process %d: open network namespace: %w", pid, err)
	}
	defer target.Close()
	inside, err := netlink.NewHandleAt(target, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("process %d: netlink: %w", pid, err)
	}
	defer inside.Close()
	if err := loopbackUp(inside); err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	return nil
}

// Detach removes machine's veth pair (both ends: deleting one end of a veth
// deletes the other). A missing link is success; a link of that name that is
// not the machine's is left alone and reported. hostIf may be empty for
// HostIfName(machine). The kernel also removes the pair by itself when the
// machine's namespace ends, so Detach matters for a machine that keeps running
// (network changed) and for cleaning up after a crash.
func (h *Host) Detach(ctx context.Context, machine, hostIf string) error {
	if hostIf == "" {
		hostIf = HostIfName(machine)
	}
	link, err := h.nl.LinkByName(hostIf)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("machine %q: detach: look up %s: %w", machine, hostIf, err)
	}
	if link.Type() != "veth" || link.Attrs().Alias != machineAlias(machine) {
		return fmt.Errorf("machine %q: detach: link %s is not the machine's veth (alias %q); leaving it alone: %w", machine, hostIf, link.Attrs().Alias, ErrExists)
	}
	if err := h.nl.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("machine %q: detach: delete %s: %w", machine, hostIf, err)
	}
	slog.DebugContext(ctx, "veth removed", "machine", machine, "link", hostIf)
	return nil
}

// AttachmentDrift compares the machine's link with a and describes each
// difference, for the daemon's drift detection; nil means Attach would change
// nothing.
func (h *Host) AttachmentDrift(ctx context.Context, pid int, a Attachment) ([]string, error) {
	a = a.withDefaults()
	hostLink, err := h.nl.LinkByName(a.HostIf)
	if isNotFound(err) {
		return []string{fmt.Sprintf("veth %s of machine %s is missing", a.HostIf, a.Machine)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("machine %q: look up %s: %w", a.Machine, a.HostIf, err)
	}
	target, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, fmt.Errorf("machine %q: open network namespace of process %d: %w", a.Machine, pid, err)
	}
	defer target.Close()
	inside, err := netlink.NewHandleAt(target, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("machine %q: netlink: %w", a.Machine, err)
	}
	defer inside.Close()
	if err := h.checkOwnVeth(a, hostLink, target, inside); err != nil {
		return []string{err.Error()}, nil
	}
	var drift []string
	if br, err := h.nl.LinkByName(a.Bridge); err != nil || br.Attrs().Index != hostLink.Attrs().MasterIndex {
		drift = append(drift, fmt.Sprintf("%s is not a port of bridge %s", a.HostIf, a.Bridge))
	}
	if hostLink.Attrs().Flags&net.FlagUp == 0 {
		drift = append(drift, fmt.Sprintf("%s is down", a.HostIf))
	}
	guest, err := inside.LinkByName(GuestIfName)
	if err != nil {
		return nil, fmt.Errorf("machine %q: find %s: %w", a.Machine, GuestIfName, err)
	}
	if guest.Attrs().Flags&net.FlagUp == 0 {
		drift = append(drift, GuestIfName+" is down")
	}
	if guest.Attrs().HardwareAddr.String() != a.MAC.String() {
		drift = append(drift, fmt.Sprintf("%s has MAC %s, want %s", GuestIfName, guest.Attrs().HardwareAddr, a.MAC))
	}
	addrs, err := retryDump(ctx, func() ([]netlink.Addr, error) { return inside.AddrList(guest, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("machine %q: list addresses: %w", a.Machine, err)
	}
	drift = append(drift, addrDrift(GuestIfName, addrs, a.Addr4, a.Addr6)...)
	for _, gw := range []netip.Addr{a.Gateway4, a.Gateway6} {
		if gw.IsValid() && !hasDefaultRoute(inside, guest, gw) {
			drift = append(drift, fmt.Sprintf("no default route via %s", gw))
		}
	}
	return drift, nil
}

func hasDefaultRoute(inside *netlink.Handle, guest netlink.Link, gw netip.Addr) bool {
	fam := netlink.FAMILY_V4
	if gw.Is6() {
		fam = netlink.FAMILY_V6
	}
	routes, err := inside.RouteList(guest, fam)
	if err != nil {
		return false
	}
	for _, rt := range routes {
		isDefault := rt.Dst == nil || toPrefix(rt.Dst).Bits() == 0
		if g, ok := netip.AddrFromSlice(rt.Gw); ok && isDefault && g.Unmap() == gw {
			return true
		}
	}
	return false
}
