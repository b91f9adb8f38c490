package netconf

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestReverseAddr(t *testing.T) {
	for name, want := range map[string]string{
		"10.0.87.10.in-addr.arpa.": "10.87.0.10",
		"b.a.9.8.7.6.5.4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.8.d.f.ip6.arpa.": "fd87::4567:89ab",
		"0.87.10.in-addr.arpa.":   "",
		"x.0.87.10.in-addr.arpa.": "",
		"web.berth.":              "",
		"b.a.9.8.7.6.5.4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.8.d.ip6.arpa.":  "",
		"bb.a.9.8.7.6.5.4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.8.d.f.ip6.arpa.": "",
	} {
		a, ok := reverseAddr(name)
		got := ""
		if ok {
			got = a.String()
		}
		if got != want {
			t.Errorf("reverseAddr(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestNamesAnswer table-tests what the resolver answers itself and what it
// forwards.
func TestNamesAnswer(t *testing.T) {
	n := newNames("berth", []netip.Prefix{netip.MustParsePrefix("10.87.0.0/24"), netip.MustParsePrefix("fd87::/64")}, []NameRecord{
		{Machine: "web", Addr4: netip.MustParseAddr("10.87.0.10"), Addr6: netip.MustParseAddr("fd87::10")},
		{Machine: "db", Addr4: netip.MustParseAddr("10.87.0.11")},
	})
	type want struct {
		forward bool
		rcode   int
		answer  string // the answers' data, space-separated
	}
	for _, c := range []struct {
		name  string
		qtype uint16
		want  want
	}{
		{"web.", dns.TypeA, want{rcode: dns.RcodeSuccess, answer: "10.87.0.10"}},
		{"web.berth.", dns.TypeA, want{rcode: dns.RcodeSuccess, answer: "10.87.0.10"}},
		{"WEB.Berth.", dns.TypeAAAA, want{rcode: dns.RcodeSuccess, answer: "fd87::10"}},
		{"web.berth.", dns.TypeANY, want{rcode: dns.RcodeSuccess, answer: "10.87.0.10 fd87::10"}},
		{"db.berth.", dns.TypeAAAA, want{rcode: dns.RcodeSuccess}},
		{"web.berth.", dns.TypeMX, want{rcode: dns.RcodeSuccess}},
		{"nope.berth.", dns.TypeA, want{rcode: dns.RcodeNameError}},
		{"a.web.berth.", dns.TypeA, want{rcode: dns.RcodeNameError}},
		{"berth.", dns.TypeSOA, want{rcode: dns.RcodeSuccess}},
		{"10.0.87.10.in-addr.arpa.", dns.TypePTR, want{rcode: dns.RcodeSuccess, answer: "web.berth."}},
		{"0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.8.d.f.ip6.arpa.", dns.TypePTR, want{rcode: dns.RcodeSuccess, answer: "web.berth."}},
		{"99.0.87.10.in-addr.arpa.", dns.TypePTR, want{rcode: dns.RcodeNameError}},
		{"1.1.1.1.in-addr.arpa.", dns.TypePTR, want{forward: true}},
		{"example.org.", dns.TypeA, want{forward: true}},
		{"printer.", dns.TypeA, want{forward: true}},
		{"web.example.org.", dns.TypeA, want{forward: true}},
		{"webberth.", dns.TypeA, want{forward: true}},
	} {
		req := new(dns.Msg)
		req.SetQuestion(c.name, c.qtype)
		m := n.answer(req)
		if c.want.forward {
			if m != nil {
				t.Errorf("%s %s: answered %v, want it forwarded", c.name, dns.TypeToString[c.qtype], m)
			}
			continue
		}
		if m == nil {
			t.Errorf("%s %s: forwarded, want an answer", c.name, dns.TypeToString[c.qtype])
			continue
		}
		var got []string
		for _, rr := range m.Answer {
			got = append(got, strings.TrimPrefix(rr.String(), rr.Header().String()))
		}
		if m.Rcode != c.want.rcode || strings.Join(got, " ") != c.want.answer || !m.Authoritative || m.Id != req.Id {
			t.Errorf("%s %s: %s %q (aa %v), want %s %q", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[m.Rcode], got, m.Authoritative,
				dns.RcodeToString[c.want.rcode], c.want.answer)
		}
		if (m.Rcode == dns.RcodeNameError || len(m.Answer) == 0) && len(m.Ns) != 1 {
			t.Errorf("%s: a negative answer without the SOA: %v", c.name, m)
		}
	}
}

func TestResolverConfigValidate(t *testing.T) {
	ok := ResolverConfig{Network: "lan", Domain: "berth", Listen: []netip.Addr{netip.MustParseAddr("10.87.0.1")},
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.87.0.0/24")}, NamesDir: "/run/berth/networks/lan/names"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for what, c := range map[string]func(*ResolverConfig){
		"no domain":  func(c *ResolverConfig) { c.Domain = "" },
		"no listen":  func(c *ResolverConfig) { c.Listen = nil },
		"no subnets": func(c *ResolverConfig) { c.Subnets = nil },
		"no names":   func(c *ResolverConfig) { c.NamesDir = "" },
	} {
		bad := ok
		c(&bad)
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), `network "lan": resolver:`) {
			t.Errorf("%s: %v", what, err)
		}
	}
}
