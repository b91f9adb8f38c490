package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/logctx"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
	"github.com/berthd/berth/supervisor"
)

// record is a machine's machine.json as berthd keeps it: the supervisor's
// wiring, and the definition the machine was started with (what the next
// plan compares against, also after berthd restarts).
type record struct {
	supervisor.Wiring
	Spec *spec.Machine `json:"spec"`
}

// readRecord reads a machine's machine.json.
func readRecord(d rundir.Dir) (*record, error) {
	var r record
	if err := supervisor.ReadRecord(d, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// containerConfig turns a definition and its root into the supervisor's config.
func containerConfig(p config.Paths, m *spec.Machine, root *rootfs.Root) container.Config {
	c := container.Config{
		Name:        m.Name,
		UUID:        rundir.MachineUUID(m.Name),
		Boot:        len(m.Command) == 0,
		Init:        m.Init,
		Hostname:    m.Hostname,
		StopTimeout: m.StopTimeout.D(),
		ConsoleLog:  rundir.ConsoleLog(p.LogDir, m.Name),
		RuntimeDir:  rundir.For(p.RuntimeDir, m.Name).Path(),
		CapAdd:      m.Capabilities.Add,
		CapDrop:     m.Capabilities.Drop,
		Resources:   containerResources(m.Resources),
		NetworkMode: "private",
		// As nspawn's unit allows it: a tun device creates its link inside the
		// machine's own network namespace (VPNs in machines).
		AllowTun:            true,
		SyscallFilter:       m.SystemCallFilter,
		SeccompOptional:     m.Security.Seccomp == spec.Optional,
		DeviceFenceOptional: m.Security.DeviceFence == spec.Optional,
	}
	if c.Boot {
		c.Args = m.InitArgs
	} else {
		c.Args, c.WorkingDir = m.Command, m.WorkDir
	}
	if m.Network.Name == spec.NetworkHost {
		c.NetworkMode = "host"
	}
	healthConfig(&c, m)
	for k, v := range m.Environment {
		c.Env = append(c.Env, k+"="+v)
	}
	slices.Sort(c.Env)
	for _, mt := range m.Mounts {
		c.Mounts = append(c.Mounts, container.Mount{
			Type: string(mt.Type), Source: mt.Source, Target: mt.Target, ReadOnly: mt.ReadOnly,
			Size: mt.Size.Bytes(), Mode: uint32(mt.Mode), Idmap: mt.Idmapped(),
		})
	}
	if root != nil {
		if root.Overlay != nil {
			c.Root.Overlay = &container.Overlay{Lower: root.Overlay.Lower, Upper: root.Overlay.Upper, Work: root.Overlay.Work}
		} else {
			c.Root.Dir = root.Dir
		}
	}
	return c
}

func containerResources(r spec.Resources) container.Resources {
	return container.Resources{
		MemoryMax:  r.MemoryMax.Bytes(),
		MemoryHigh: r.MemoryHigh.Bytes(),
		CPUs:       r.CPUs,
		CPUWeight:  uint64(r.CPUWeight),
		PidsMax:    int64(r.PidsMax),
		IOWeight:   uint64(r.IOWeight),
		IO:         containerIOLimits(r.IO),
		CPUSet:     r.CPUSet,
	}
}

func containerIOLimits(io []spec.IOLimit) []container.IOLimit {
	var out []container.IOLimit
	for _, l := range io {
		out = append(out, container.IOLimit{Device: l.Device,
			ReadBps: uint64(l.ReadBandwidth), WriteBps: uint64(l.WriteBandwidth),
			ReadIOPS: uint64(l.ReadIOPS), WriteIOPS: uint64(l.WriteIOPS)})
	}
	return out
}

// bridgeOf is the netconf view of a declared network's bridge.
func bridgeOf(n *spec.Network) netconf.Bridge {
	b := netconf.Bridge{Name: n.Bridge, Network: n.Name}
	if n.Gateway.IsValid() {
		b.Gateway4 = netip.PrefixFrom(n.Gateway, n.Subnet.Bits())
	}
	if n.Gateway6.IsValid() && n.Subnet6.IsValid() {
		b.Gateway6 = netip.PrefixFrom(n.Gateway6, n.Subnet6.Bits())
	}
	return b
}

// resolverConfig is what the network's DNS resolver runs with, or nil when
// the network has it off (or has no gateway to answer on).
func resolverConfig(runtimeDir string, n *spec.Network) *netconf.ResolverConfig {
	if !n.ResolverOn() || !n.Gateway.IsValid() {
		return nil
	}
	c := &netconf.ResolverConfig{Network: n.Name, Domain: n.Resolver.Domain,
		Listen: []netip.Addr{n.Gateway}, Subnets: []netip.Prefix{n.Subnet},
		NamesDir: rundir.ForNetwork(runtimeDir, n.Name).Names()}
	if n.Gateway6.IsValid() && n.Subnet6.IsValid() {
		c.Listen = append(c.Listen, n.Gateway6)
		c.Subnets = append(c.Subnets, n.Subnet6)
	}
	for _, a := range n.DNS {
		if !slices.Contains(c.Listen, a) { // never forward to itself
			c.Upstreams = append(c.Upstreams, a)
		}
	}
	return c
}

// ruleset is the whole nftables ruleset the definitions need, given which
// machines run and their attachments: the networks, the port forwards of the
// running machines, and an anti-spoofing guard on the port of every running
// attached machine whose definition does not turn it off. A machine that runs
// but is no longer declared keeps its guard until it stops.
func ruleset(d *spec.Set, attached map[string]*netconf.Attachment) netconf.Ruleset {
	var rs netconf.Ruleset
	for _, n := range d.Networks {
		rs.Networks = append(rs.Networks, netconf.NATNetwork{Name: n.Name, Bridge: n.Bridge, Subnet4: n.Subnet, Subnet6: n.Subnet6, Masquerade: n.Masquerade()})
	}
	for _, m := range d.Machines {
		att := attached[m.Name]
		if att == nil {
			continue
		}
		if m.Network.Private() {
			rs.Forwards = append(rs.Forwards, machineForwards(m, att)...)
		}
		// The link is the one the machine runs with, also when its
		// definition now says another network (it moves at its restart).
		if m.Network.Guarded() {
			rs.Guards = append(rs.Guards, att.Guard())
		}
	}
	for name, att := range attached {
		if d.Machine(name) == nil {
			rs.Guards = append(rs.Guards, att.Guard())
		}
	}
	return rs
}

// machineForwards are a machine's port forwards to its addresses: each goes to
// the machine's address of the host address's family, or, without a host
// address, to both when the machine has both.
func machineForwards(m *spec.Machine, att *netconf.Attachment) []netconf.Forward {
	var out []netconf.Forward
	for _, p := range m.Network.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		f := netconf.Forward{Machine: m.Name, Proto: proto, HostAddr: p.HostAddress, HostPort: uint16(p.HostPort), Port: uint16(p.MachinePort)}
		if f.Port == 0 {
			f.Port = f.HostPort
		}
		if att.Addr4.IsValid() && (!p.HostAddress.IsValid() || p.HostAddress.Is4()) {
			f4 := f
			f4.Addr = att.Addr4.Addr()
			out = append(out, f4)
		}
		if att.Addr6.IsValid() && (!p.HostAddress.IsValid() || (p.HostAddress.Is6() && !p.HostAddress.Is4In6())) {
			f6 := f
			f6.Addr = att.Addr6.Addr()
			out = append(out, f6)
		}
	}
	return out
}

// logErr logs err at warning level with the machine named.
func logErr(ctx context.Context, msg, machine string, err error) {
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		logctx.From(ctx).Warn(msg, "machine", machine, "err", err)
	}
}

// parseMAC reads a MAC address as the definition gives it.
func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, err
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("%s is not a 6-byte Ethernet address", s)
	}
	return mac, nil
}
