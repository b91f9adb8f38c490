package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthd/berth/internal/revert"
	"github.com/berthd/berth/netconf"
)

func init() {
	register("net", "network setup per machine (IPAM + veth + addresses + rules; baseline: the same with ip(8)), TCP throughput over a berth bridge with and without anti-spoofing guards vs a plain veth pair (iperf3)", benchNet)
}

const (
	netSetupRuns  = 21 // machines attached, one after the other
	netIperfRuns  = 7  // iperf3 trials per path, alternating
	netIperfSecs  = 3  // seconds per trial (after one omitted warm-up second)
	netBenchNet4  = "10.77.0.1/24"
	netBenchNet6  = "fd77::1/64"
	netBenchHostA = "10.77.9.1"
	netBenchHostB = "10.77.9.2"
)

// benchNet measures, in network namespaces it makes (nothing touches the real
// host's network):
//
//   - setup: the network work of starting one machine, as berthd does it: its
//     leases (IPv4 and IPv6 in one locked, fsynced update of the lease file),
//     Attach (veth pair, bridge port, host0 moved in with MAC, addresses,
//     default routes, loopback) and ApplyRules with the machine's port forward
//     and anti-spoofing guard added to the tables. Baseline: the same link work
//     done with ip(8) commands, the way shell hooks (nspawn's --network-veth
//     wrapper scripts, LXC hooks) do.
//   - throughput: iperf3 TCP between two machines on a berth bridge, without
//     and with the anti-spoofing guards of all the setup's machines (their pair
//     first in the bridge table's dispatch, and the last two, whose frames pass
//     the other machines' jumps first), beside two plain namespaces joined by a
//     single veth pair (the least any bridged setup can cost). Medians of
//     alternating trials.
func benchNet() (map[string]any, error) {
	for _, c := range []string{"iperf3", "ip", "nsenter", "cat"} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, fmt.Errorf("%s is needed (hack/deps.sh installs it)", c)
		}
	}
	r := revert.New()
	defer r.Fail()
	lab, err := openNetLab(r)
	if err != nil {
		return nil, err
	}
	var t netTimes
	if err := lab.setupBerth(&t); err != nil {
		return nil, err
	}
	if err := lab.setupIP(&t); err != nil {
		return nil, err
	}
	pa, pb, err := newVethPair(r)
	if err != nil {
		return nil, err
	}
	if err := lab.timeRules(&t); err != nil {
		return nil, err
	}
	if err := lab.throughput(pa, pb, &t); err != nil {
		return nil, err
	}
	// Leave nothing behind in the bench's host namespace (it goes away with
	// its process anyway).
	_ = lab.h.ApplyRules(lab.ctx, netconf.Ruleset{})
	return t.report(), nil
}

// netLab stands in for the host of the net bench: a network namespace of its
// own with a berth bridge and NAT network in it, the netconf handle and lease
// file berthd would use there, and the namespaces standing in for machines.
type netLab struct {
	ctx      context.Context
	host     *benchNetns
	h        *netconf.Host
	leases   *netconf.Leases
	bridge   netconf.Bridge
	nat      netconf.NATNetwork
	machines []*benchNetns // the berth machines first, then the ip(8) ones
	// The berth machines' port forwards, guards and IPv4 addresses.
	fwds   []netconf.Forward
	guards []netconf.Guard
	addrs  []netip.Addr
}

// openNetLab makes the lab's host namespace with its bridge and lease file;
// r undoes it all, the machines' namespaces included.
func openNetLab(r *revert.Reverter) (*netLab, error) {
	l := &netLab{ctx: context.Background()}
	host, err := newBenchNetns()
	if err != nil {
		return nil, err
	}
	r.Add(host.close)
	l.host = host
	if l.h, err = netconf.Open(host.path); err != nil {
		return nil, err
	}
	r.Add(func() { l.h.Close() })
	if err := netconf.SetupLoopback(l.ctx, host.pid); err != nil {
		return nil, err
	}
	stateDir, err := os.MkdirTemp("", "berth-bench-net-")
	if err != nil {
		return nil, err
	}
	r.Add(func() { os.RemoveAll(stateDir) })
	if l.leases, err = netconf.OpenLeases(stateDir); err != nil {
		return nil, err
	}
	l.bridge = netconf.Bridge{Name: "br-bench", Network: "bench", Gateway4: netip.MustParsePrefix(netBenchNet4), Gateway6: netip.MustParsePrefix(netBenchNet6)}
	if err := l.h.EnsureBridge(l.ctx, l.bridge); err != nil {
		return nil, err
	}
	l.nat = netconf.NATNetwork{Name: "bench", Bridge: l.bridge.Name, Subnet4: l.bridge.Gateway4.Masked(), Subnet6: l.bridge.Gateway6.Masked(), Masquerade: true}
	r.Add(func() {
		for _, m := range l.machines {
			m.close()
		}
	})
	return l, nil
}

// newMachine makes the namespace of one more machine.
func (l *netLab) newMachine() (*benchNetns, error) {
	m, err := newBenchNetns()
	if err != nil {
		return nil, err
	}
	l.machines = append(l.machines, m)
	return m, nil
}

// ruleset is the rules of all the berth machines so far, with or without
// their anti-spoofing guards.
func (l *netLab) ruleset(guards bool) netconf.Ruleset {
	rs := netconf.Ruleset{Networks: []netconf.NATNetwork{l.nat}, Forwards: l.fwds}
	if guards {
		rs.Guards = l.guards
	}
	return rs
}

// netTimes are the net bench's measurements, in the order it takes them.
type netTimes struct {
	// Per berth machine: the whole setup and its leases, attach and rules steps.
	setup, alloc, attach, rules []time.Duration
	ip                          []time.Duration // per ip(8) machine
	// The rules of all the machines at once, without and with the guards.
	rulesPlain, rulesGuarded []time.Duration
	// iperf3 over the bridge without the guards, with them (the first and the
	// last two ports), and over a plain veth pair.
	bridge, guarded, last, veth netTrials
}

// setupBerth attaches netSetupRuns machines one after the other as berthd
// does it: leases, Attach, then the rules of all so far.
func (l *netLab) setupBerth(t *netTimes) error {
	b := l.bridge
	for i := range netSetupRuns {
		m, err := l.newMachine()
		if err != nil {
			return err
		}
		name := fmt.Sprintf("bench%02d", i)
		t0 := time.Now()
		got, err := l.leases.AllocateAll("bench", name, []netconf.AddrRequest{
			{Subnet: l.nat.Subnet4, Gateway: b.Gateway4.Addr()},
			{Subnet: l.nat.Subnet6, Gateway: b.Gateway6.Addr()},
		})
		if err != nil {
			return err
		}
		a4, a6 := got[0], got[1]
		t1 := time.Now()
		att := netconf.Attachment{Machine: name, Bridge: b.Name, Addr4: a4, Addr6: a6, Gateway4: b.Gateway4.Addr(), Gateway6: b.Gateway6.Addr()}
		if err := l.h.Attach(l.ctx, m.pid, att); err != nil {
			return err
		}
		t2 := time.Now()
		l.fwds = append(l.fwds, netconf.Forward{Machine: name, Proto: "tcp", HostPort: uint16(10000 + i), Addr: a4.Addr(), Port: 80})
		l.guards = append(l.guards, att.Guard())
		if err := l.h.ApplyRules(l.ctx, l.ruleset(true)); err != nil {
			return err
		}
		t3 := time.Now()
		t.setup, t.alloc, t.attach, t.rules = append(t.setup, t3.Sub(t0)), append(t.alloc, t1.Sub(t0)), append(t.attach, t2.Sub(t1)), append(t.rules, t3.Sub(t2))
		l.addrs = append(l.addrs, a4.Addr())
	}
	return nil
}

// setupIP does the same link work as setupBerth's Attach with ip(8)
// commands, the way shell hooks (nspawn's --network-veth wrapper scripts, LXC
// hooks) do, for netSetupRuns more machines.
func (l *netLab) setupIP(t *netTimes) error {
	host := strconv.Itoa(l.host.pid)
	for i := range netSetupRuns {
		m, err := l.newMachine()
		if err != nil {
			return err
		}
		veth := fmt.Sprintf("vi-%02d", i)
		a4 := fmt.Sprintf("10.77.0.%d/24", 100+i)
		a6 := fmt.Sprintf("fd77::%x/64", 0x100+i)
		pid := strconv.Itoa(m.pid)
		t0 := time.Now()
		if err := nsenterAll([][]string{
			{"-t", host, "-n", "ip", "link", "add", veth, "type", "veth", "peer", "name", "host0", "netns", pid},
			{"-t", host, "-n", "ip", "link", "set", veth, "master", l.bridge.Name, "up"},
			{"-t", pid, "-n", "ip", "link", "set", "lo", "up"},
			{"-t", pid, "-n", "ip", "link", "set", "host0", "up"},
			{"-t", pid, "-n", "ip", "addr", "add", a4, "dev", "host0"},
			{"-t", pid, "-n", "ip", "addr", "add", a6, "dev", "host0", "nodad"},
			{"-t", pid, "-n", "ip", "route", "add", "default", "via", l.bridge.Gateway4.Addr().String()},
			{"-t", pid, "-n", "ip", "-6", "route", "add", "default", "via", l.bridge.Gateway6.Addr().String()},
		}); err != nil {
			return err
		}
		t.ip = append(t.ip, time.Since(t0))
	}
	return nil
}

// newVethPair makes two namespaces joined by one veth pair, netBenchHostA
// and netBenchHostB at its ends: the least any bridged setup can cost. r
// removes them.
func newVethPair(r *revert.Reverter) (pa, pb *benchNetns, err error) {
	if pa, err = newBenchNetns(); err != nil {
		return nil, nil, err
	}
	r.Add(pa.close)
	if pb, err = newBenchNetns(); err != nil {
		return nil, nil, err
	}
	r.Add(pb.close)
	a, b := strconv.Itoa(pa.pid), strconv.Itoa(pb.pid)
	err = nsenterAll([][]string{
		{"-t", a, "-n", "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1", "netns", b},
		{"-t", a, "-n", "ip", "addr", "add", netBenchHostA + "/24", "dev", "p0"},
		{"-t", b, "-n", "ip", "addr", "add", netBenchHostB + "/24", "dev", "p1"},
		{"-t", a, "-n", "ip", "link", "set", "p0", "up"},
		{"-t", b, "-n", "ip", "link", "set", "p1", "up"},
		{"-t", a, "-n", "ip", "link", "set", "lo", "up"},
		{"-t", b, "-n", "ip", "link", "set", "lo", "up"},
	})
	return pa, pb, err
}

// timeRules times the rules step of all the berth machines at once, without
// and with their guards, alternating.
func (l *netLab) timeRules(t *netTimes) error {
	for range netSetupRuns {
		for _, c := range []struct {
			rs  netconf.Ruleset
			out *[]time.Duration
		}{{l.ruleset(false), &t.rulesPlain}, {l.ruleset(true), &t.rulesGuarded}} {
			t0 := time.Now()
			if err := l.h.ApplyRules(l.ctx, c.rs); err != nil {
				return err
			}
			*c.out = append(*c.out, time.Since(t0))
		}
	}
	return nil
}

// throughput runs the iperf3 trials, alternating: two berth machines over
// the bridge without the guards, with them (the first two ports, then the
// last two), and the two ends of the veth pair pa–pb.
func (l *netLab) throughput(pa, pb *benchNetns, t *netTimes) error {
	m, last := l.machines, netSetupRuns-1
	for range netIperfRuns {
		if err := l.h.ApplyRules(l.ctx, l.ruleset(false)); err != nil {
			return err
		}
		if err := t.bridge.run("the bridge", m[0].pid, m[1].pid, l.addrs[0].String()); err != nil {
			return err
		}
		if err := l.h.ApplyRules(l.ctx, l.ruleset(true)); err != nil {
			return err
		}
		if err := t.guarded.run("the bridge with guards", m[0].pid, m[1].pid, l.addrs[0].String()); err != nil {
			return err
		}
		if err := t.last.run("the bridge with guards, last ports", m[last].pid, m[last-1].pid, l.addrs[last].String()); err != nil {
			return err
		}
		if err := t.veth.run("a veth pair", pa.pid, pb.pid, netBenchHostA); err != nil {
			return err
		}
	}
	return nil
}

// report prints the figures of t and returns them to record.
func (t *netTimes) report() map[string]any {
	sSetup, sIP := median(t.setup), median(t.ip)
	gbit := func(v float64) float64 { return v / 1e9 }
	bw, vw := median(t.bridge.bps), median(t.veth.bps)
	be, ve := median(t.bridge.eff), median(t.veth.eff)
	gw, lw := median(t.guarded.bps), median(t.last.bps)
	ge, le := median(t.guarded.eff), median(t.last.eff)
	fmt.Printf("   setup per machine (median of %d): %.2f ms (leases %.2f, attach %.2f, rules %.2f); p90 %.2f ms; target < 20 ms\n",
		netSetupRuns, ms(sSetup), ms(median(t.alloc)), ms(median(t.attach)), ms(median(t.rules)), ms(netP90Dur(t.setup)))
	fmt.Printf("   the same links with ip(8): %.2f ms → berth's attach takes %.2fx the time of ip(8)'s commands\n",
		ms(sIP), ms(median(t.attach))/ms(sIP))
	fmt.Printf("   the rules of all %d machines at once (median of %d): %.2f ms without anti-spoofing guards, %.2f ms with them\n",
		netSetupRuns, netSetupRuns, ms(median(t.rulesPlain)), ms(median(t.rulesGuarded)))
	fmt.Printf("   TCP throughput (iperf3, median of %d × %d s): bridge %.2f Gbit/s, plain veth pair %.2f Gbit/s → ratio %.3f\n",
		netIperfRuns, netIperfSecs, gbit(bw), gbit(vw), bw/vw)
	fmt.Printf("   CPU cost (bits per CPU-second of sender and receiver; steadier under load): bridge %.2f Gbit, veth %.2f Gbit → the bridge costs %.2fx the CPU per bit\n",
		gbit(be), gbit(ve), ve/be)
	fmt.Printf("   with the anti-spoofing guards of %d machines: %.2f Gbit/s (%.3f of the unguarded bridge; CPU per bit %.2fx), the last two ports %.2f Gbit/s (%.3f; CPU per bit %.2fx)\n",
		netSetupRuns, gbit(gw), gw/bw, be/ge, gbit(lw), lw/bw, be/le)
	fmt.Printf("   (2 cores shared with other work: medians, alternating trials)\n")
	return map[string]any{
		"setup_ms_median":            ms(sSetup),
		"setup_ms_p90":               ms(netP90Dur(t.setup)),
		"setup_leases_ms_median":     ms(median(t.alloc)),
		"setup_attach_ms_median":     ms(median(t.attach)),
		"setup_rules_ms_median":      ms(median(t.rules)),
		"setup_target_ms":            20,
		"setup_ip8_ms_median":        ms(sIP),
		"attach_vs_ip8_ratio":        ms(median(t.attach)) / ms(sIP),
		"tcp_bridge_gbps_median":     gbit(bw),
		"tcp_veth_gbps_median":       gbit(vw),
		"tcp_bridge_vs_veth_ratio":   bw / vw,
		"tcp_bridge_gbit_per_cpu_s":  gbit(be),
		"tcp_veth_gbit_per_cpu_s":    gbit(ve),
		"tcp_cpu_cost_ratio":         ve / be,
		"tcp_bridge_gbps_all":        netMapF(t.bridge.bps, gbit),
		"tcp_guarded_gbps_median":    gbit(gw),
		"tcp_guarded_vs_bridge":      gw / bw,
		"tcp_guarded_cpu_cost":       be / ge,
		"tcp_guarded_last_gbps":      gbit(lw),
		"tcp_guarded_last_vs_bridge": lw / bw,
		"tcp_guarded_last_cpu_cost":  be / le,
		"tcp_guarded_gbps_all":       netMapF(t.guarded.bps, gbit),
		"tcp_guarded_last_gbps_all":  netMapF(t.last.bps, gbit),
		"guards":                     netSetupRuns,
		"tcp_veth_gbps_all":          netMapF(t.veth.bps, gbit),
		"runs_setup":                 netSetupRuns,
		"runs_iperf":                 netIperfRuns,
		"iperf_seconds":              netIperfSecs,
	}
}

// netTrials are the iperf3 trials of one path: bits per second, and bits per
// CPU-second.
type netTrials struct{ bps, eff []float64 }

// run adds one trial from the namespace of client to a server in the
// namespace of server; path names the path in its error.
func (n *netTrials) run(path string, server, client int, addr string) error {
	r, err := netIperf(server, client, addr)
	if err != nil {
		return fmt.Errorf("iperf3 over %s: %w", path, err)
	}
	n.bps, n.eff = append(n.bps, r.bps), append(n.eff, r.bitsPerCPUSec)
	return nil
}

// nsenterAll runs nsenter(1) with each of cmds as its arguments, in order,
// and stops at the first that fails.
func nsenterAll(cmds [][]string) error {
	for _, c := range cmds {
		if out, err := exec.Command("nsenter", c...).CombinedOutput(); err != nil {
			return fmt.Errorf("nsenter %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

// iperfResult is one trial: received bits per second, and bits received per
// CPU-second spent by sender and receiver together.
type iperfResult struct{ bps, bitsPerCPUSec float64 }

// netIperf runs one iperf3 trial from the namespace of client to a one-off
// server in the namespace of server.
func netIperf(server, client int, addr string) (iperfResult, error) {
	srv := exec.Command("nsenter", "-t", strconv.Itoa(server), "-n", "iperf3", "-s", "-1", "-B", addr)
	if err := srv.Start(); err != nil {
		return iperfResult{}, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var lastErr error
	for try := 0; try < 50; try++ { // until the server listens
		out, err := exec.Command("nsenter", "-t", strconv.Itoa(client), "-n", "iperf3", "-c", addr, "-t", strconv.Itoa(netIperfSecs), "-O", "1", "-J").Output()
		var res struct {
			Error string `json:"error"`
			End   struct {
				SumReceived struct {
					Bytes         float64 `json:"bytes"`
					Seconds       float64 `json:"seconds"`
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
				CPU struct {
					Host   float64 `json:"host_total"`
					Remote float64 `json:"remote_total"`
				} `json:"cpu_utilization_percent"`
			} `json:"end"`
		}
		if jerr := json.Unmarshal(out, &res); jerr != nil {
			lastErr = fmt.Errorf("%v, output %q: %w", err, out, jerr)
		} else if res.Error != "" || res.End.SumReceived.BitsPerSecond == 0 {
			lastErr = fmt.Errorf("iperf3: %q", res.Error)
		} else {
			r := res.End.SumReceived
			cpuSec := (res.End.CPU.Host + res.End.CPU.Remote) / 100 * r.Seconds
			return iperfResult{bps: r.BitsPerSecond, bitsPerCPUSec: r.Bytes * 8 / cpuSec}, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return iperfResult{}, lastErr
}

// benchNetns is a process holding a new network namespace (cat, until its
// stdin closes: also when the bench dies).
type benchNetns struct {
	pid  int
	path string
	cmd  *exec.Cmd
	in   interface{ Close() error }
}

func newBenchNetns() (*benchNetns, error) {
	cmd := exec.Command("cat")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("new network namespace: %w", err)
	}
	return &benchNetns{pid: cmd.Process.Pid, path: fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), cmd: cmd, in: in}, nil
}

func (n *benchNetns) close() {
	_ = n.in.Close()
	_ = n.cmd.Wait()
}

func netP90Dur(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)*9/10]
}

func netMapF(v []float64, f func(float64) float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = f(x)
	}
	return out
}
