package machined_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/procstat"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/machined/api"
	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
)

// TestDNS: machines on a network find each other by name through the
// network's resolver, which berthd starts with the network and which keeps
// answering while berthd is down; a stopped machine's name goes, a PTR
// lookup gives the name, and a query from outside the network is refused.
func TestDNS(t *testing.T) {
	e := newEnv(t, "")
	a, b := testenv.UniqueName("a"), testenv.UniqueName("b")
	e.write("images.yaml", testImages(t))
	e.write("network.yaml", `apiVersion: berth/v1
kind: Network
name: lan
subnet: 10.97.0.0/24
subnet6: fd97::/64
`)
	e.write("a.yaml", bbMachine(a, ""))
	e.write("b.yaml", bbMachine(b, ""))
	e.apply()
	e.waitState(a, api.StateRunning, 20*time.Second)
	e.waitState(b, api.StateRunning, 20*time.Second)
	bAddr := e.status(b).Addresses[0]

	// lookup runs busybox nslookup in machine a, through its supervisor
	// (berthd may be down).
	lookup := func(name string) (string, int) {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		code, err := container.Enter(ctx, filepath.Join(e.paths.RuntimeDir, "machines", a), container.EnterOptions{Command: []string{"nslookup", name}, Stdout: &out, Stderr: &out})
		if err != nil {
			e.t.Fatalf("enter %s: %v", a, err)
		}
		return out.String(), code
	}
	resolves := func(name, addr string) error {
		out, code := lookup(name)
		if code != 0 || !strings.Contains(out, addr) {
			return fmt.Errorf("nslookup %s in %s: exit %d, want %s:\n%s", name, a, code, addr, out)
		}
		return nil
	}

	e.run("the guest's resolv.conf names the gateway and the domain", func(t *testing.T) {
		out, _ := e.exec(a, "cat", "/etc/resolv.conf")
		for _, want := range []string{"nameserver 10.97.0.1\n", "nameserver fd97::1\n", "search berth\n"} {
			if !strings.Contains(out, want) {
				t.Fatalf("resolv.conf lacks %q:\n%s", want, out)
			}
		}
	})

	e.run("a resolves b by name, in the domain, and b's address back to its name", func(t *testing.T) {
		for _, name := range []string{b, b + ".berth"} {
			if err := resolves(name, bAddr); err != nil {
				t.Fatal(err)
			}
		}
		if out, code := lookup(bAddr); code != 0 || !strings.Contains(out, b+".berth") {
			t.Fatalf("nslookup %s (PTR) in %s: exit %d, want %s.berth:\n%s", bAddr, a, code, b, out)
		}
		if out, code := lookup("nosuch.berth"); code == 0 || !strings.Contains(out, "NXDOMAIN") {
			t.Fatalf("nslookup nosuch.berth: exit %d, want NXDOMAIN:\n%s", code, out)
		}
	})

	e.run("a query from outside the network is refused", func(t *testing.T) {
		e.nsRun("ip", "addr", "add", "192.0.2.7/32", "dev", "lo")
		m, err := e.queryFrom("192.0.2.7", "10.97.0.1", b+".berth.")
		if err != nil || m.Rcode != dns.RcodeRefused {
			t.Fatalf("query from 192.0.2.7: %v %v, want REFUSED", m, err)
		}
	})

	var resolverPID int
	e.run("names resolve while berthd is down, and its restart keeps the resolver", func(t *testing.T) {
		resolverPID = e.resolverPID()
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", resolverPID)); err == nil {
			for _, l := range strings.Split(string(st), "\n") {
				if strings.HasPrefix(l, "VmRSS:") || strings.HasPrefix(l, "RssAnon:") || strings.HasPrefix(l, "RssFile:") {
					t.Logf("the resolver's %s", strings.Join(strings.Fields(l), " "))
				}
			}
		}
		e.killDaemon()
		if err := resolves(b+".berth", bAddr); err != nil {
			t.Fatalf("with berthd down: %v", err)
		}
		e.startDaemon()
		if _, err := e.api.Apply(context.Background(), api.ApplyRequest{}); err != nil {
			t.Fatal(err)
		}
		if got := e.resolverPID(); got != resolverPID {
			t.Fatalf("the resolver was restarted with berthd: PID %d, then %d", resolverPID, got)
		}
		if err := resolves(b, bAddr); err != nil {
			t.Fatal(err)
		}
	})

	e.run("a killed resolver is drift: the next reconcile starts another, which finds the names", func(t *testing.T) {
		if err := syscall.Kill(resolverPID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 5*time.Second, func() error {
			p, err := e.api.Plan(context.Background(), api.PlanRequest{Path: filepath.Join(e.dir, "defs")})
			if err != nil || !strings.Contains(p.String(), "the DNS resolver of network lan is not running") {
				return fmt.Errorf("plan after the resolver was killed: %v, %v", p, err)
			}
			return nil
		})
		if _, err := e.api.Apply(context.Background(), api.ApplyRequest{}); err != nil {
			t.Fatal(err)
		}
		if resolverPID = e.resolverPID(); resolverPID == 0 {
			t.Fatal("no new resolver")
		}
		if err := resolves(b+".berth", bAddr); err != nil {
			t.Fatal(err)
		}
	})

	e.run("a stopped machine's name stops resolving, and comes back with it", func(t *testing.T) {
		if err := e.api.Verb(context.Background(), b, "stop"); err != nil {
			t.Fatal(err)
		}
		e.waitState(b, api.StateStopped, 20*time.Second)
		testenv.Eventually(t, 5*time.Second, func() error {
			if out, code := lookup(b + ".berth"); code == 0 || !strings.Contains(out, "NXDOMAIN") {
				return fmt.Errorf("nslookup %s.berth after it stopped: exit %d:\n%s", b, code, out)
			}
			return nil
		})
		if err := e.api.Verb(context.Background(), b, "start"); err != nil {
			t.Fatal(err)
		}
		e.waitState(b, api.StateRunning, 20*time.Second)
		testenv.Eventually(t, 5*time.Second, func() error { return resolves(b+".berth", e.status(b).Addresses[0]) })
	})

	e.run("a machine that moves to another network leaves this one's names", func(t *testing.T) {
		e.write("network2.yaml", "apiVersion: berth/v1\nkind: Network\nname: lan2\nsubnet: 10.95.0.0/24\n")
		e.write("b.yaml", bbMachine(b, "network: lan2\n"))
		e.apply()
		testenv.Eventually(t, 20*time.Second, func() error {
			s := e.status(b)
			if s.State != api.StateRunning || len(s.Addresses) == 0 || !strings.HasPrefix(s.Addresses[0], "10.95.") {
				return fmt.Errorf("b is %s at %v, want running on lan2", s.State, s.Addresses)
			}
			return nil
		})
		testenv.Eventually(t, 5*time.Second, func() error {
			if out, code := lookup(b + ".berth"); code == 0 || !strings.Contains(out, "NXDOMAIN") {
				return fmt.Errorf("nslookup %s.berth on lan after b moved to lan2: exit %d:\n%s", b, code, out)
			}
			return nil
		})
		if _, err := os.Stat(filepath.Join(e.paths.RuntimeDir, "networks", "lan2", "names", b)); err != nil {
			t.Fatalf("b has no name record on lan2: %v", err)
		}
	})

	e.run("removing the networks stops their resolvers", func(t *testing.T) {
		for _, f := range []string{"a.yaml", "b.yaml", "network.yaml", "network2.yaml"} {
			if err := os.Remove(filepath.Join(e.dir, "defs", f)); err != nil {
				t.Fatal(err)
			}
		}
		e.apply()
		testenv.Eventually(t, 10*time.Second, func() error {
			if procstat.Alive(resolverPID, e.resolverStart) {
				return fmt.Errorf("the resolver (PID %d) still runs", resolverPID)
			}
			for _, n := range []string{"lan", "lan2"} {
				if _, err := os.Stat(filepath.Join(e.paths.RuntimeDir, "networks", n)); err == nil {
					return fmt.Errorf("the runtime directory of network %s is still there", n)
				}
			}
			return nil
		})
	})
}

// resolverPID is the PID of network lan's resolver, which must run.
func (e *env) resolverPID() int {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.paths.RuntimeDir, "networks", "lan", "dns.pid"))
	if err != nil {
		e.t.Fatalf("no resolver: %v", err)
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), `{"pid":%d,"start":%d}`, &pid, &start); err != nil || !procstat.Alive(pid, start) {
		e.t.Fatalf("dns.pid %q: %v (alive %v)", b, err, procstat.Alive(pid, start))
	}
	e.resolverStart = start
	return pid
}

// queryFrom asks server (port 53) for name's A record from the address src
// in the env's network namespace.
func (e *env) queryFrom(src, server, name string) (*dns.Msg, error) {
	type result struct {
		m   *dns.Msg
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread joins the env's namespace and ends with the goroutine.
		runtime.LockOSThread()
		ns, err := netns.GetFromName(e.netns)
		if err == nil {
			defer ns.Close()
			err = netns.Set(ns)
		}
		if err != nil {
			ch <- result{err: err}
			return
		}
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
		conn, err := d.Dial("udp", net.JoinHostPort(server, "53"))
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer conn.Close()
		req := new(dns.Msg)
		req.SetQuestion(name, dns.TypeA)
		m, _, err := (&dns.Client{Timeout: 2 * time.Second}).ExchangeWithConn(req, &dns.Conn{Conn: conn})
		ch <- result{m, err}
	}()
	r := <-ch
	return r.m, r.err
}
