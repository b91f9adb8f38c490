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
	ctx := context.Background()
	host, err := newBenchNetns()
	if err != nil {
		return nil, err
	}
	defer host.close()
	h, err := netconf.Open(host.path)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	if err := netconf.SetupLoopback(ctx, host.pid); err != nil {
		return nil, err
	}
	stateDir, err := os.MkdirTemp("", "berth-bench-net-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stateDir)
	leases, err := netconf.OpenLeases(stateDir)
	if err != nil {
		return nil, err
	}
	b := netconf.Bridge{Name: "br-bench", Network: "bench", Gateway4: netip.MustParsePrefix(netBenchNet4), Gateway6: netip.MustParsePrefix(netBenchNet6)}
	if err := h.EnsureBridge(ctx, b); err != nil {
		return nil, err
	}
	nat := netconf.NATNetwork{Name: "bench", Bridge: b.Name, Subnet4: b.Gateway4.Masked(), Subnet6: b.Gateway6.Masked(), Masquerade: true}

	// Setup time: berth.
	var machines []*benchNetns
	defer func() {
		for _, m := range machines {
			m.close()
		}
	}()
	var setup, alloc, attach, rules []time.Duration
	var fwds []netconf.Forward
	var guards []netconf.Guard
	var addrs []netip.Addr
	for i := range netSetupRuns {
		m, err := newBenchNetns()
		if err != nil {
			return nil, err
		}
		machines = append(machines, m)
		name := fmt.Sprintf("bench%02d", i)
		t0 := time.Now()
		got, err := leases.AllocateAll("bench", name, []netconf.AddrRequest{
			{Subnet: nat.Subnet4, Gateway: b.Gateway4.Addr()},
			{Subnet: nat.Subnet6, Gateway: b.Gateway6.Addr()},
		})
		if err != nil {
			return nil, err
		}
		a4, a6 := got[0], got[1]
		t1 := time.Now()
		att := netconf.Attachment{Machine: name, Bridge: b.Name, Addr4: a4, Addr6: a6, Gateway4: b.Gateway4.Addr(), Gateway6: b.Gateway6.Addr()}
		if err := h.Attach(ctx, m.pid, att); err != nil {
			return nil, err
		}
		t2 := time.Now()
		fwds = append(fwds, netconf.Forward{Machine: name, Proto: "tcp", HostPort: uint16(10000 + i), Addr: a4.Addr(), Port: 80})
		guards = append(guards, att.Guard())
		if err := h.ApplyRules(ctx, netconf.Ruleset{Networks: []netconf.NATNetwork{nat}, Forwards: fwds, Guards: guards}); err != nil {
			return nil, err
		}
		t3 := time.Now()
		setup, alloc, attach, rules = append(setup, t3.Sub(t0)), append(alloc, t1.Sub(t0)), append(attach, t2.Sub(t1)), append(rules, t3.Sub(t2))
		addrs = append(addrs, a4.Addr())
	}

	// Setup time: the same link work with ip(8).
	var ipSetup []time.Duration
	for i := range netSetupRuns {
		m, err := newBenchNetns()
		if err != nil {
			return nil, err
		}
		machines = append(machines, m)
		veth := fmt.Sprintf("vi-%02d", i)
		a4 := fmt.Sprintf("10.77.0.%d/24", 100+i)
		a6 := fmt.Sprintf("fd77::%x/64", 0x100+i)
		pid := strconv.Itoa(m.pid)
		t0 := time.Now()
		for _, c := range [][]string{
			{"-t", strconv.Itoa(host.pid), "-n", "ip", "link", "add", veth, "type", "veth", "peer", "name", "host0", "netns", pid},
			{"-t", strconv.Itoa(host.pid), "-n", "ip", "link", "set", veth, "master", b.Name, "up"},
			{"-t", pid, "-n", "ip", "link", "set", "lo", "up"},
			{"-t", pid, "-n", "ip", "link", "set", "host0", "up"},
			{"-t", pid, "-n", "ip", "addr", "add", a4, "dev", "host0"},
			{"-t", pid, "-n", "ip", "addr", "add", a6, "dev", "host0", "nodad"},
			{"-t", pid, "-n", "ip", "route", "add", "default", "via", b.Gateway4.Addr().String()},
			{"-t", pid, "-n", "ip", "-6", "route", "add", "default", "via", b.Gateway6.Addr().String()},
		} {
			if out, err := exec.Command("nsenter", c...).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("nsenter %s: %v: %s", strings.Join(c, " "), err, out)
			}
		}
		ipSetup = append(ipSetup, time.Since(t0))
	}

	// Throughput: two berth machines over the bridge, and two namespaces
	// joined by one veth pair.
	pa, err := newBenchNetns()
	if err != nil {
		return nil, err
	}
	defer pa.close()
	pb, err := newBenchNetns()
	if err != nil {
		return nil, err
	}
	defer pb.close()
	for _, c := range [][]string{
		{"-t", strconv.Itoa(pa.pid), "-n", "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1", "netns", strconv.Itoa(pb.pid)},
		{"-t", strconv.Itoa(pa.pid), "-n", "ip", "addr", "add", netBenchHostA + "/24", "dev", "p0"},
		{"-t", strconv.Itoa(pb.pid), "-n", "ip", "addr", "add", netBenchHostB + "/24", "dev", "p1"},
		{"-t", strconv.Itoa(pa.pid), "-n", "ip", "link", "set", "p0", "up"},
		{"-t", strconv.Itoa(pb.pid), "-n", "ip", "link", "set", "p1", "up"},
		{"-t", strconv.Itoa(pa.pid), "-n", "ip", "link", "set", "lo", "up"},
		{"-t", strconv.Itoa(pb.pid), "-n", "ip", "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("nsenter", c...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("nsenter %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	// The rules step of the whole set, without and with the guards.
	plain := netconf.Ruleset{Networks: []netconf.NATNetwork{nat}, Forwards: fwds}
	guarded := netconf.Ruleset{Networks: []netconf.NATNetwork{nat}, Forwards: fwds, Guards: guards}
	var rulesPlain, rulesGuarded []time.Duration
	for range netSetupRuns {
		for _, c := range []struct {
			rs  netconf.Ruleset
			out *[]time.Duration
		}{{plain, &rulesPlain}, {guarded, &rulesGuarded}} {
			t0 := time.Now()
			if err := h.ApplyRules(ctx, c.rs); err != nil {
				return nil, err
			}
			*c.out = append(*c.out, time.Since(t0))
		}
	}

	var bridgeBps, vethBps, bridgeEff, vethEff, guardBps, guardEff, lastBps, lastEff []float64
	last := netSetupRuns - 1
	for range netIperfRuns {
		if err := h.ApplyRules(ctx, plain); err != nil {
			return nil, err
		}
		r, err := netIperf(machines[0].pid, machines[1].pid, addrs[0].String())
		if err != nil {
			return nil, fmt.Errorf("iperf3 over the bridge: %w", err)
		}
		bridgeBps, bridgeEff = append(bridgeBps, r.bps), append(bridgeEff, r.bitsPerCPUSec)
		if err := h.ApplyRules(ctx, guarded); err != nil {
			return nil, err
		}
		if r, err = netIperf(machines[0].pid, machines[1].pid, addrs[0].String()); err != nil {
			return nil, fmt.Errorf("iperf3 over the bridge with guards: %w", err)
		}
		guardBps, guardEff = append(guardBps, r.bps), append(guardEff, r.bitsPerCPUSec)
		if r, err = netIperf(machines[last].pid, machines[last-1].pid, addrs[last].String()); err != nil {
			return nil, fmt.Errorf("iperf3 over the bridge with guards, last ports: %w", err)
		}
		lastBps, lastEff = append(lastBps, r.bps), append(lastEff, r.bitsPerCPUSec)
		if r, err = netIperf(pa.pid, pb.pid, netBenchHostA); err != nil {
			return nil, fmt.Errorf("iperf3 over a veth pair: %w", err)
		}
		vethBps, vethEff = append(vethBps, r.bps), append(vethEff, r.bitsPerCPUSec)
	}

	// Leave nothing behind in the bench's host namespace (it goes away with
	// its process anyway).
	_ = h.ApplyRules(ctx, netconf.Ruleset{})

	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	sSetup, sIP := netMedianDur(setup), netMedianDur(ipSetup)
	gbit := func(v float64) float64 { return v / 1e9 }
	bw, vw := netMedianF(bridgeBps), netMedianF(vethBps)
	be, ve := netMedianF(bridgeEff), netMedianF(vethEff)
	gw, lw := netMedianF(guardBps), netMedianF(lastBps)
	ge, le := netMedianF(guardEff), netMedianF(lastEff)
	fmt.Printf("   setup per machine (median of %d): %.2f ms (leases %.2f, attach %.2f, rules %.2f); p90 %.2f ms; target < 20 ms\n",
		netSetupRuns, ms(sSetup), ms(netMedianDur(alloc)), ms(netMedianDur(attach)), ms(netMedianDur(rules)), ms(netP90Dur(setup)))
	fmt.Printf("   the same links with ip(8): %.2f ms → berth's attach takes %.2fx the time of ip(8)'s commands\n",
		ms(sIP), ms(netMedianDur(attach))/ms(sIP))
	fmt.Printf("   the rules of all %d machines at once (median of %d): %.2f ms without anti-spoofing guards, %.2f ms with them\n",
		netSetupRuns, netSetupRuns, ms(netMedianDur(rulesPlain)), ms(netMedianDur(rulesGuarded)))
	fmt.Printf("   TCP throughput (iperf3, median of %d × %d s): bridge %.2f Gbit/s, plain veth pair %.2f Gbit/s → ratio %.3f\n",
		netIperfRuns, netIperfSecs, gbit(bw), gbit(vw), bw/vw)
	fmt.Printf("   CPU cost (bits per CPU-second of sender and receiver; steadier under load): bridge %.2f Gbit, veth %.2f Gbit → the bridge costs %.2fx the CPU per bit\n",
		gbit(be), gbit(ve), ve/be)
	fmt.Printf("   with the anti-spoofing guards of %d machines: %.2f Gbit/s (%.3f of the unguarded bridge; CPU per bit %.2fx), the last two ports %.2f Gbit/s (%.3f; CPU per bit %.2fx)\n",
		netSetupRuns, gbit(gw), gw/bw, be/ge, gbit(lw), lw/bw, be/le)
	fmt.Printf("   (2 cores shared with other work: medians, alternating trials)\n")
	return map[string]any{
		"setup_ms_median":            ms(sSetup),
		"setup_ms_p90":               ms(netP90Dur(setup)),
		"setup_leases_ms_median":     ms(netMedianDur(alloc)),
		"setup_attach_ms_median":     ms(netMedianDur(attach)),
		"setup_rules_ms_median":      ms(netMedianDur(rules)),
		"setup_target_ms":            20,
		"setup_ip8_ms_median":        ms(sIP),
		"attach_vs_ip8_ratio":        ms(netMedianDur(attach)) / ms(sIP),
		"tcp_bridge_gbps_median":     gbit(bw),
		"tcp_veth_gbps_median":       gbit(vw),
		"tcp_bridge_vs_veth_ratio":   bw / vw,
		"tcp_bridge_gbit_per_cpu_s":  gbit(be),
		"tcp_veth_gbit_per_cpu_s":    gbit(ve),
		"tcp_cpu_cost_ratio":         ve / be,
		"tcp_bridge_gbps_all":        netMapF(bridgeBps, gbit),
		"tcp_guarded_gbps_median":    gbit(gw),
		"tcp_guarded_vs_bridge":      gw / bw,
		"tcp_guarded_cpu_cost":       be / ge,
		"tcp_guarded_last_gbps":      gbit(lw),
		"tcp_guarded_last_vs_bridge": lw / bw,
		"tcp_guarded_last_cpu_cost":  be / le,
		"tcp_guarded_gbps_all":       netMapF(guardBps, gbit),
		"tcp_guarded_last_gbps_all":  netMapF(lastBps, gbit),
		"guards":                     netSetupRuns,
		"tcp_veth_gbps_all":          netMapF(vethBps, gbit),
		"runs_setup":                 netSetupRuns,
		"runs_iperf":                 netIperfRuns,
		"iperf_seconds":              netIperfSecs,
	}, nil
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

func netMedianDur(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func netP90Dur(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)*9/10]
}

func netMedianF(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func netMapF(v []float64, f func(float64) float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = f(x)
	}
	return out
}
