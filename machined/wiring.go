package machined

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
)

// SuperviseStage is the name of the re-executed stage that runs a detached
// machine supervisor with berth's wiring.
const SuperviseStage = "supervise"

func init() {
	container.RegisterStage(SuperviseStage, func() { container.SuperviseStage(superviseHooks) })
}

// wiringFile is RUN/machines/NAME/machine.json: what machined knows about a
// running machine beyond the supervisor's container.Config — the definition it
// was started with (so the next reconcile can tell what changed, also after
// berthd restarts), its network attachment, and the state directory its root
// lives in.
const wiringFile = "machine.json"

// wiring is the content of wiringFile.
type wiring struct {
	Spec       *spec.Machine       `json:"spec"`
	StateDir   string              `json:"stateDir"`
	Driver     string              `json:"driver"`
	Attachment *netconf.Attachment `json:"attachment,omitempty"`
	Network    string              `json:"network,omitempty"` // the Network's name when attached
}

func readWiring(runDir string) (*wiring, error) {
	b, err := os.ReadFile(filepath.Join(runDir, wiringFile))
	if err != nil {
		return nil, err
	}
	var w wiring
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(runDir, wiringFile), err)
	}
	return &w, nil
}

func writeWiring(runDir string, w *wiring) error {
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(w, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(runDir, wiringFile), append(b, '\n'), 0o600)
}

// rootLock is the machine root's lock a detached supervisor holds for its life.
var rootLock *rootfs.RootLock

// superviseHooks joins the leaf packages into one detached supervisor: it holds
// the machine root's lock for the machine's whole life, attaches the network
// from outside before the guest's init runs, and uses the systemd scope and
// systemd-machined registration when the host runs systemd.
func superviseHooks(ctx context.Context, cfg container.Config) (container.Hooks, error) {
	w, err := readWiring(cfg.RuntimeDir)
	if err != nil {
		return container.Hooks{}, fmt.Errorf("machine %q: %w", cfg.Name, err)
	}
	var h container.Hooks
	// berthd.service runs with a lowered OOM score; the machines must not
	// inherit that protection from it.
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("0"), 0)
	if w.StateDir != "" {
		store, err := rootfs.Open(w.StateDir)
		if err != nil {
			return h, fmt.Errorf("machine %q: %w", cfg.Name, err)
		}
		// The lock is released by the kernel when this process ends, however it
		// ends; until then rootLock keeps its file from being collected.
		if rootLock, err = store.LockRoot(cfg.Name); err != nil {
			return h, fmt.Errorf("machine %q: %w", cfg.Name, err)
		}
	}
	h.Network = networkHook(w)
	if w.Attachment != nil && w.Spec != nil {
		loopbackProxyHooks(&h, machineForwards(w.Spec, w.Attachment))
	}
	if err := systemdHooks(ctx, &h, cfg, w); err != nil {
		return h, err
	}
	return h, nil
}

// loopbackProxyHooks runs the machine's [::1] port forwards (the one kind the
// kernel cannot do) in its supervisor, for as long as the machine lives.
func loopbackProxyHooks(h *container.Hooks, fwds []netconf.Forward) {
	var nh *netconf.Host
	var proxy *netconf.LoopbackProxy
	started, stopped := h.Started, h.Stopped
	h.Started = func(ctx context.Context, s container.Started) error {
		if started != nil {
			if err := started(ctx, s); err != nil {
				return err
			}
		}
		if proxy != nil {
			return nil // a reboot: the proxy goes on
		}
		var err error
		if nh, err = netconf.Open(""); err != nil {
			return err
		}
		// An idle proxy when none of the forwards needs one.
		proxy, err = nh.ProxyLoopback(ctx, fwds)
		return err
	}
	h.Stopped = func(ctx context.Context, st container.ExitStatus) {
		if proxy != nil {
			_ = proxy.Close()
		}
		if nh != nil {
			_ = nh.Close()
		}
		if stopped != nil {
			stopped(ctx, st)
		}
	}
}

// networkHook attaches the machine's veth (or just brings loopback up) from the
// host side, with the payload's PID, before its init runs.
func networkHook(w *wiring) func(ctx context.Context, pid int) error {
	if w.Attachment == nil {
		if w.Spec != nil && w.Spec.Network.Name == spec.NetworkHost {
			return nil
		}
		return func(ctx context.Context, pid int) error { return netconf.SetupLoopback(ctx, pid) }
	}
	att := *w.Attachment
	return func(ctx context.Context, pid int) error {
		h, err := netconf.Open("")
		if err != nil {
			return err
		}
		defer h.Close()
		return h.Attach(ctx, pid, att)
	}
}

// machineUUID derives a machine's stable 128-bit ID from its name: the guest's
// /etc/machine-id is seeded from it, so it stays the same across restarts,
// re-creations and host reboots without any state to keep.
func machineUUID(name string) string {
	h := sha256.Sum256([]byte("berth machine\x00" + name))
	h[6] = (h[6] & 0x0f) | 0x40 // a version-4-shaped UUID
	h[8] = (h[8] & 0x3f) | 0x80
	return hex.EncodeToString(h[:16])
}

// containerConfig turns a definition and its root into the supervisor's config.
func containerConfig(p Paths, m *spec.Machine, root *rootfs.Root) container.Config {
	c := container.Config{
		Name:        m.Name,
		UUID:        machineUUID(m.Name),
		Boot:        len(m.Command) == 0,
		Init:        m.Init,
		Hostname:    m.Hostname,
		StopTimeout: m.StopTimeout.D(),
		ConsoleLog:  filepath.Join(p.LogDir, m.Name+".console.log"),
		RuntimeDir:  filepath.Join(p.RuntimeDir, "machines", m.Name),
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
		c.Args = m.Command
	}
	if m.Network.Name == spec.NetworkHost {
		c.NetworkMode = "host"
	}
	if m.PrivateUsers != "" && m.PrivateUsers != spec.PrivateUsersOff {
		c.PrivateUsers = string(m.PrivateUsers)
	}
	for k, v := range m.Environment {
		c.Env = append(c.Env, k+"="+v)
	}
	slices.Sort(c.Env)
	for _, mt := range m.Mounts {
		c.Mounts = append(c.Mounts, container.Mount{
			Type: string(mt.Type), Source: mt.Source, Target: mt.Target, ReadOnly: mt.ReadOnly,
			Size: mt.Size.Bytes(), Mode: uint32(mt.Mode),
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
	}
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
func logErr(msg, machine string, err error) {
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		slog.Warn(msg, "machine", machine, "err", err)
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
