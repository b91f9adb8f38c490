package netconf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthd/berth/internal/procstat"
	"github.com/berthd/berth/internal/testenv"
	"github.com/miekg/dns"
)

// dnsEnv is a resolver in a network namespace of the test's, on a dummy link
// that carries the gateway, two machines' addresses to query from, an
// address outside the network, and a fake upstream server.
type dnsEnv struct {
	h     *Host
	p     netnsProc
	r     *Resolver
	names string
	// upstreamDelay slows the fake upstream down.
	upstreamDelay atomic.Int64
}

const (
	dnsGateway  = "10.77.0.1"
	dnsClientA  = "10.77.0.2"
	dnsClientB  = "10.77.0.3"
	dnsOutside  = "10.78.0.9"
	dnsUpstream = "10.79.0.53"
)

func newDNSEnv(t *testing.T) *dnsEnv {
	t.Helper()
	h, p := testHost(t)
	mustSh(t, p.pid, "ip", "link", "add", "d0", "type", "bridge")
	mustSh(t, p.pid, "ip", "link", "set", "d0", "up")
	for _, a := range []string{dnsGateway + "/24", dnsClientA + "/24", dnsClientB + "/24", dnsOutside + "/24", dnsUpstream + "/24", "fd77::1/64", "fd77::2/64"} {
		args := []string{"ip", "addr", "add", a, "dev", "d0"}
		if strings.Contains(a, ":") {
			args = append(args, "nodad")
		}
		mustSh(t, p.pid, args...)
	}
	e := &dnsEnv{h: h, p: p, names: filepath.Join(t.TempDir(), "names")}
	e.startUpstream(t)
	r, err := h.ServeResolver(context.Background(), ResolverConfig{
		Network: "lan", Domain: "berth",
		Listen:    []netip.Addr{netip.MustParseAddr(dnsGateway), netip.MustParseAddr("fd77::1")},
		Subnets:   []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("fd77::/64")},
		Upstreams: []netip.Addr{netip.MustParseAddr(dnsUpstream)},
		NamesDir:  e.names,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	e.r = r
	return e
}

// startUpstream serves example.org (A 192.0.2.1) on dnsUpstream:53, UDP and TCP.
func (e *dnsEnv) startUpstream(t *testing.T) {
	var pc net.PacketConn
	var ln net.Listener
	if err := e.h.do(func() (err error) {
		if pc, err = net.ListenPacket("udp", dnsUpstream+":53"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", dnsUpstream+":53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		time.Sleep(time.Duration(e.upstreamDelay.Load()))
		m := new(dns.Msg)
		m.SetReply(req)
		if req.Question[0].Name == "example.org." {
			rr, _ := dns.NewRR("example.org. 60 IN A 192.0.2.1")
			m.Answer = []dns.RR{rr}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
}

// query asks the resolver at server (port 53) from the address src.
func (e *dnsEnv) query(src, server, proto, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	var conn net.Conn
	err := e.h.do(func() error {
		d := net.Dialer{Timeout: timeout}
		if proto == "udp" {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(src)}
		} else {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		var err error
		conn, err = d.Dial(proto, net.JoinHostPort(server, "53"))
		return err
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	c := &dns.Client{Net: proto, Timeout: timeout}
	m, _, err := c.ExchangeWithConn(req, &dns.Conn{Conn: conn})
	return m, err
}

func (e *dnsEnv) record(t *testing.T, name, addr4, addr6 string) {
	t.Helper()
	r := NameRecord{Machine: name, SupervisorPID: os.Getpid()}
	r.SupervisorStart, _ = procstat.StartTime(os.Getpid())
	if addr4 != "" {
		r.Addr4 = netip.MustParseAddr(addr4)
	}
	if addr6 != "" {
		r.Addr6 = netip.MustParseAddr(addr6)
	}
	if err := WriteNameRecord(e.names, r); err != nil {
		t.Fatal(err)
	}
}

// answers is the data of a reply's answers, sorted, or its rcode when it is
// not NOERROR.
func answers(m *dns.Msg, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	if m.Rcode != dns.RcodeSuccess {
		return dns.RcodeToString[m.Rcode]
	}
	var out []string
	for _, rr := range m.Answer {
		out = append(out, strings.TrimPrefix(rr.String(), rr.Header().String()))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// TestResolver answers over real UDP and TCP sockets: machines by name, in
// the domain, by address; NXDOMAIN for unknown names of the domain; the
// rest forwarded; REFUSED from outside the network; names that follow the
// records as they come and go, and a crashed supervisor's record dropped.
func TestResolver(t *testing.T) {
	e := newDNSEnv(t)
	e.record(t, "web", "10.77.0.10", "fd77::10")
	e.record(t, "db", "10.77.0.11", "")
	// A record whose supervisor is gone: a process that has ended.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := WriteNameRecord(e.names, NameRecord{Machine: "ghost", Addr4: netip.MustParseAddr("10.77.0.12"), SupervisorPID: dead.Process.Pid, SupervisorStart: 1}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		src, server, proto, name string
		qtype                    uint16
		want                     string
	}{
		{dnsClientA, dnsGateway, "udp", "web.", dns.TypeA, "10.77.0.10"},
		{dnsClientA, dnsGateway, "udp", "web.berth.", dns.TypeA, "10.77.0.10"},
		{dnsClientA, dnsGateway, "tcp", "web.berth.", dns.TypeAAAA, "fd77::10"},
		{"fd77::2", "fd77::1", "udp", "db.berth.", dns.TypeA, "10.77.0.11"},
		{dnsClientA, dnsGateway, "udp", "10.0.77.10.in-addr.arpa.", dns.TypePTR, "web.berth."},
		{dnsClientA, dnsGateway, "udp", "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.7.d.f.ip6.arpa.", dns.TypePTR, "web.berth."},
		{dnsClientA, dnsGateway, "udp", "nope.berth.", dns.TypeA, "NXDOMAIN"},
		{dnsClientA, dnsGateway, "udp", "ghost.berth.", dns.TypeA, "NXDOMAIN"},
		{dnsClientA, dnsGateway, "udp", "example.org.", dns.TypeA, "192.0.2.1"},
		{dnsClientA, dnsGateway, "tcp", "example.org.", dns.TypeA, "192.0.2.1"},
		{dnsClientA, dnsGateway, "udp", "nowhere.example.", dns.TypeA, "NXDOMAIN"},
		{dnsOutside, dnsGateway, "udp", "web.berth.", dns.TypeA, "REFUSED"},
		{dnsOutside, dnsGateway, "tcp", "example.org.", dns.TypeA, "REFUSED"},
	} {
		if got := answers(e.query(c.src, c.server, c.proto, c.name, c.qtype, 2*time.Second)); got != c.want {
			t.Errorf("%s %s from %s over %s: %s, want %s", c.name, dns.TypeToString[c.qtype], c.src, c.proto, got, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(e.names, "ghost")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the record of a dead supervisor was kept: %v", err)
	}

	// Names follow the records.
	if err := RemoveNameRecord(e.names, "web", os.Getpid()); err != nil {
		t.Fatal(err)
	}
	e.record(t, "api", "10.77.0.20", "")
	testenv.Eventually(t, 3*time.Second, func() error {
		web := answers(e.query(dnsClientA, dnsGateway, "udp", "web.berth.", dns.TypeA, time.Second))
		api := answers(e.query(dnsClientA, dnsGateway, "udp", "api.berth.", dns.TypeA, time.Second))
		if web != "NXDOMAIN" || api != "10.77.0.20" {
			return fmt.Errorf("after web stopped and api started: web %s, api %s", web, api)
		}
		return nil
	})
	// Another run's record is not removed by the one before.
	if err := RemoveNameRecord(e.names, "api", os.Getpid()+1); err != nil {
		t.Fatal(err)
	}
	if got := answers(e.query(dnsClientA, dnsGateway, "udp", "api.", dns.TypeA, time.Second)); got != "10.77.0.20" {
		t.Errorf("api after an older run's removal: %s", got)
	}

	// Without its names directory (the runtime directory is gone) it ends.
	if err := os.RemoveAll(e.names); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.r.Done():
		if err := e.r.Err(); err == nil || !strings.Contains(err.Error(), "was removed") {
			t.Errorf("resolver ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the resolver still runs after its names directory was removed")
	}
}

// TestResolverFlood: one machine sending queries as fast as it can does not
// starve another, whose queries (local and forwarded) are each answered
// within a bound.
func TestResolverFlood(t *testing.T) {
	e := newDNSEnv(t)
	e.record(t, "web", "10.77.0.10", "")
	e.upstreamDelay.Store(int64(200 * time.Millisecond))

	var conn net.Conn
	if err := e.h.do(func() (err error) {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(dnsClientA)}}
		conn, err = d.Dial("udp", dnsGateway+":53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stop := make(chan struct{})
	var sent, got atomic.Int64
	var wg sync.WaitGroup
	// Half the flood needs forwarding (to a slow upstream), half is local.
	local, fwd := new(dns.Msg), new(dns.Msg)
	local.SetQuestion("web.berth.", dns.TypeA)
	fwd.SetQuestion("example.org.", dns.TypeA)
	lb, _ := local.Pack()
	fb, _ := fwd.Pack()
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				b := lb
				if n%2 == 1 {
					b = fb
				}
				if _, err := conn.Write(b); err == nil {
					sent.Add(1)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 512)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := conn.Read(buf); err == nil {
				got.Add(1)
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(200 * time.Millisecond) // the flood is on

	var worst time.Duration
	for i := 0; i < 40; i++ {
		name, want := "web.berth.", "10.77.0.10"
		if i%4 == 3 {
			name, want = "example.org.", "192.0.2.1"
		}
		t0 := time.Now()
		var ans string
		for try := 0; try < 3; try++ { // a resolver library retries too
			if ans = answers(e.query(dnsClientB, dnsGateway, "udp", name, dns.TypeA, 700*time.Millisecond)); ans == want {
				break
			}
		}
		d := time.Since(t0)
		worst = max(worst, d)
		if ans != want {
			t.Fatalf("query %d (%s) of the other machine during the flood: %s after %s, want %s", i, name, ans, d, want)
		}
	}
	t.Logf("flood: %d queries sent by one machine, %d answered (%.0f%%); the other machine's worst answer took %s",
		sent.Load(), got.Load(), 100*float64(got.Load())/float64(max(sent.Load(), 1)), worst)
	if worst > 1500*time.Millisecond {
		t.Errorf("the other machine waited %s for an answer during the flood", worst)
	}
	if got.Load() > sent.Load()/2 {
		t.Errorf("the flood was not limited: %d of %d answered", got.Load(), sent.Load())
	}
}
