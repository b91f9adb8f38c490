package netconf

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// natWorld is a test host with one berth network and two machines on it, and
// an "outside" namespace behind the host's uplink (192.0.2.0/24, 2001:db8::/64),
// all in namespaces the test made.
type natWorld struct {
	h          *Host
	host       netnsProc
	outside    netnsProc
	m1, m2     netnsProc
	b          Bridge
	a1, a2     Attachment
	net        NATNetwork
	uplink     string
	hostAddr4  string
	hostAddr6  string
	outsideIP4 string
}

func newNATWorld(t *testing.T) *natWorld {
	t.Helper()
	ctx := context.Background()
	w := newNATWorldNoMachines(t)
	w.m1, w.m2 = newNetns(t), newNetns(t)
	w.a1 = attachment(testenv.UniqueName("web"), w.b, "10.88.0.2", "fd88::2")
	w.a2 = attachment(testenv.UniqueName("cli"), w.b, "10.88.0.3", "fd88::3")
	for _, x := range []struct {
		p netnsProc
		a Attachment
	}{{w.m1, w.a1}, {w.m2, w.a2}} {
		if err := w.h.Attach(ctx, x.p.pid, x.a); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// newNATWorldNoMachines is the host, its bridge and the outside, no machines.
func newNATWorldNoMachines(t *testing.T) *natWorld {
	t.Helper()
	testenv.RequireCommand(t, "nft", "ip", "nsenter")
	ctx := context.Background()
	w := &natWorld{hostAddr4: "192.0.2.1", hostAddr6: "2001:db8::1", outsideIP4: "192.0.2.2"}
	w.h, w.host = testHost(t)
	w.outside = newNetns(t)
	w.b = testBridge(t)
	if err := w.h.EnsureBridge(ctx, w.b); err != nil {
		t.Fatal(err)
	}
	w.net = NATNetwork{Name: w.b.Network, Bridge: w.b.Name, Subnet4: w.b.Gateway4.Masked(), Subnet6: w.b.Gateway6.Masked(), Masquerade: true}

	// The uplink: a veth from the host to the outside namespace. Without DAD
	// on its link-local addresses, the first IPv6 packets need not wait a
	// second or two for them.
	for _, p := range []netnsProc{w.host, w.outside} {
		mustSh(t, p.pid, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
	}
	w.uplink = testenv.UniqueName("up")
	mustSh(t, w.host.pid, "ip", "link", "add", w.uplink, "type", "veth", "peer", "name", "eth0", "netns", itoa(w.outside.pid))
	mustSh(t, w.host.pid, "ip", "link", "set", w.uplink, "up")
	mustSh(t, w.host.pid, "ip", "addr", "add", w.hostAddr4+"/24", "dev", w.uplink)
	mustSh(t, w.host.pid, "ip", "addr", "add", w.hostAddr6+"/64", "dev", w.uplink, "nodad")
	mustSh(t, w.outside.pid, "ip", "link", "set", "lo", "up")
	mustSh(t, w.outside.pid, "ip", "link", "set", "eth0", "up")
	mustSh(t, w.outside.pid, "ip", "addr", "add", w.outsideIP4+"/24", "dev", "eth0")
	mustSh(t, w.outside.pid, "ip", "addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad")
	return w
}

func TestApplyRules(t *testing.T) {
	ctx := context.Background()
	w := newNATWorld(t)
	listenIn(t, w.m1.pid, "web", ":80") // IPv4 and IPv6
	listenIn(t, w.outside.pid, "outside", ":9000")

	rs := Ruleset{
		Networks: []NATNetwork{w.net},
		Forwards: []Forward{
			{Machine: w.a1.Machine, Proto: "tcp", HostPort: 8080, Addr: w.a1.Addr4.Addr(), Port: 80},
			{Machine: w.a1.Machine, Proto: "tcp", HostPort: 8080, Addr: w.a1.Addr6.Addr(), Port: 80},
		},
	}
	if err := w.h.ApplyRules(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if err := w.h.ApplyRules(ctx, rs); err != nil {
		t.Fatalf("second ApplyRules: %v", err)
	}

	expect := func(from netnsProc, fromName, addr, wantRemote string) {
		t.Helper()
		got, err := dialIn(from.pid, addr)
		if err != nil {
			t.Fatalf("from %s to %s: %v", fromName, addr, err)
		}
		if !strings.HasPrefix(got, "hello from ") || (wantRemote != "" && !strings.Contains(got, "you are "+wantRemote)) {
			t.Fatalf("from %s to %s: got %q, want a greeting to %s", fromName, addr, got, wantRemote)
		}
		t.Logf("%s from %s to %s: %s", time.Now().Format("05.000"), fromName, addr, got)
	}
	// From outside, to the host's address: plain DNAT, the client's own address seen.
	expect(w.outside, "outside", w.hostAddr4+":8080", w.outsideIP4)
	expect(w.outside, "outside", "["+w.hostAddr6+"]:8080", "[2001:db8::2]")
	// From the host itself: to its own addresses and to 127.0.0.1 (systemd #6106).
	expect(w.host, "host", w.hostAddr4+":8080", w.hostAddr4)
	expect(w.host, "host", "["+w.hostAddr6+"]:8080", "["+w.hostAddr6+"]")
	expect(w.host, "host", "127.0.0.1:8080", w.b.Gateway4.Addr().String())
	expect(w.host, "host", w.b.Gateway4.Addr().String()+":8080", w.b.Gateway4.Addr().String())
	// From the other machine through the host's address (hairpin).
	expect(w.m2, "machine 2", w.hostAddr4+":8080", w.b.Gateway4.Addr().String())
	expect(w.m2, "machine 2", "["+w.hostAddr6+"]:8080", "["+w.b.Gateway6.Addr().String()+"]")
	// From a machine out to the world: masqueraded behind the uplink address.
	expect(w.m1, "machine 1", w.outsideIP4+":9000", w.hostAddr4)
	expect(w.m1, "machine 1", "[2001:db8::2]:9000", "["+w.hostAddr6+"]")

	for key, want := range map[string]string{
		"net/ipv4/ip_forward":                           "1",
		"net/ipv6/conf/all/forwarding":                  "1",
		"net/ipv4/conf/" + w.b.Name + "/route_localnet": "1",
	} {
		if got, err := w.h.sysctl(key); err != nil || got != want {
			t.Errorf("sysctl %s = %q, %v; want %s", key, got, err, want)
		}
	}

	// Observation: the installed rules read back, and drift is none.
	got, err := w.h.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Networks, rs.Networks) || len(got.Forwards) != 2 {
		t.Fatalf("Rules read back %+v, want %+v", got, rs)
	}
	if d, err := w.h.RulesDrift(ctx, rs); err != nil || d != nil {
		t.Fatalf("drift after ApplyRules: %q, %v", d, err)
	}
	// A rule changed by hand (same comment, other target) is drift.
	out := mustSh(t, w.host.pid, "nft", "-a", "list", "chain", "inet", TableName, "forwards")
	var handle string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "10.88.0.2:80") {
			handle = line[strings.LastIndex(line, " ")+1:]
		}
	}
	mustSh(t, w.host.pid, "nft", "replace", "rule", "inet", TableName, "forwards", "handle", handle,
		"meta", "nfproto", "ipv4", "tcp", "dport", "8080", "dnat", "ip", "to", "10.88.0.3:80",
		"comment", `"forward `+rs.Forwards[0].String()+`"`)
	if d, _ := w.h.RulesDrift(ctx, rs); len(d) != 1 {
		t.Fatalf("drift after editing a rule by hand: %q", d)
	}
	if err := w.h.ApplyRules(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if d, _ := w.h.RulesDrift(ctx, rs); d != nil {
		t.Fatalf("drift after reapplying: %q", d)
	}

	// Removing the machine's forwards removes exactly them.
	rs.Forwards = nil
	if err := w.h.ApplyRules(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if _, err := dialIn(w.host.pid, "127.0.0.1:8080"); err == nil {
		t.Fatal("forward still works after its removal")
	}
	expect(w.m1, "machine 1", w.outsideIP4+":9000", w.hostAddr4)
	if got, _ := w.h.sysctl("net/ipv4/conf/" + w.b.Name + "/route_localnet"); got != "0" {
		t.Errorf("route_localnet left on without forwards: %s", got)
	}

	// The empty ruleset deletes the table, twice without error.
	for i := 0; i < 2; i++ {
		if err := w.h.ApplyRules(ctx, Ruleset{}); err != nil {
			t.Fatal(err)
		}
	}
	if out := mustSh(t, w.host.pid, "nft", "list", "tables"); strings.Contains(out, TableName) {
		t.Fatalf("table left after the empty ruleset:\n%s", out)
	}
	if d, err := w.h.RulesDrift(ctx, Ruleset{}); err != nil || d != nil {
		t.Fatalf("drift of the empty ruleset: %q, %v", d, err)
	}
}

// IPv6 forwards from [::1] go through LoopbackProxy (the kernel cannot), UDP
// forwards work like TCP ones, and a taken host port is a clear error.
func TestLoopbackProxyAndUDP(t *testing.T) {
	ctx := context.Background()
	w := newNATWorld(t)
	listenIn(t, w.m1.pid, "web", ":80")
	udpEchoIn(t, w.m1.pid, "echo", ":5353")
	fwds := []Forward{
		{Machine: w.a1.Machine, Proto: "tcp", HostPort: 8080, Addr: w.a1.Addr4.Addr(), Port: 80},
		{Machine: w.a1.Machine, Proto: "tcp", HostPort: 8080, Addr: w.a1.Addr6.Addr(), Port: 80},
		{Machine: w.a1.Machine, Proto: "udp", HostPort: 53, Addr: w.a1.Addr4.Addr(), Port: 5353},
		{Machine: w.a1.Machine, Proto: "udp", HostPort: 53, Addr: w.a1.Addr6.Addr(), Port: 5353},
	}
	if err := w.h.ApplyRules(ctx, Ruleset{Networks: []NATNetwork{w.net}, Forwards: fwds}); err != nil {
		t.Fatal(err)
	}
	p, err := w.h.ProxyLoopback(ctx, fwds)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if len(p.Forwards()) != 2 {
		t.Fatalf("proxy serves %v, want the two IPv6 forwards", p.Forwards())
	}
	got, err := dialIn(w.host.pid, "[::1]:8080")
	if err != nil || !strings.Contains(got, "hello from web to [fd88::2]:80") {
		t.Fatalf("tcp [::1]:8080: %q, %v", got, err)
	}
	for _, addr := range []string{"[::1]:53", "127.0.0.1:53", w.hostAddr4 + ":53", "[" + w.hostAddr6 + "]:53"} {
		if got, err := udpAskIn(w.host.pid, addr, "ping"); err != nil || got != "echo: ping" {
			t.Fatalf("udp %s from the host: %q, %v", addr, got, err)
		}
	}
	if got, err := udpAskIn(w.outside.pid, w.hostAddr4+":53", "ping"); err != nil || got != "echo: ping" {
		t.Fatalf("udp from outside: %q, %v", got, err)
	}

	// A second proxy for the same port fails cleanly, naming the machine.
	if _, err := w.h.ProxyLoopback(ctx, fwds); err == nil || !strings.Contains(err.Error(), w.a1.Machine) {
		t.Fatalf("second proxy on the same ports: want an error naming the machine, got %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := dialIn(w.host.pid, "[::1]:8080"); err == nil {
		t.Fatal("[::1]:8080 still answers after the proxy closed")
	}
}
