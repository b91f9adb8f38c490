package netconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/internal/procstat"
	"github.com/berthd/berth/internal/rundir"
	"github.com/miekg/dns"
)

// NameRecord is one machine's entry in its network's names: what the
// network's resolver answers for NAME and NAME.DOMAIN. The machine's
// supervisor writes it (RUN/networks/NET/names/MACHINE) once the machine is
// attached and removes it when the machine stops; the supervisor's PID and
// start time let the resolver drop the record of a supervisor that died
// without removing it.
type NameRecord struct {
	Machine         string     `json:"machine"`
	Addr4           netip.Addr `json:"addr4,omitzero"`
	Addr6           netip.Addr `json:"addr6,omitzero"`
	SupervisorPID   int        `json:"supervisorPid"`
	SupervisorStart uint64     `json:"supervisorStart"`
}

// Record is the name record of the machine attached by a, held by the
// supervisor process pid.
func (a Attachment) Record(pid int) (NameRecord, error) {
	start, err := procstat.StartTime(pid)
	if err != nil {
		return NameRecord{}, fmt.Errorf("machine %q: name record: supervisor %d: %w", a.Machine, pid, err)
	}
	r := NameRecord{Machine: a.Machine, SupervisorPID: pid, SupervisorStart: start}
	if a.Addr4.IsValid() {
		r.Addr4 = a.Addr4.Addr()
	}
	if a.Addr6.IsValid() {
		r.Addr6 = a.Addr6.Addr()
	}
	return r, nil
}

// WriteNameRecord puts r into the names directory dir (created when missing),
// atomically, so the resolver never reads half a record.
func WriteNameRecord(dir string, r NameRecord) error {
	if err := rundir.CheckName(r.Machine); err != nil {
		return fmt.Errorf("name record: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("machine %q: name record: %w", r.Machine, err)
	}
	b, _ := json.Marshal(r)
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, r.Machine), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("machine %q: name record: %w", r.Machine, err)
	}
	return nil
}

// RemoveNameRecord removes machine's record from the names directory dir when
// it is the one the supervisor pid wrote (a newer run's record stays); a
// missing record is success.
func RemoveNameRecord(dir, machine string, pid int) error {
	p := filepath.Join(dir, machine)
	if r, err := readNameRecord(p); err == nil && r.SupervisorPID != pid {
		return nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("machine %q: remove name record: %w", machine, err)
	}
	return nil
}

func readNameRecord(p string) (NameRecord, error) {
	var r NameRecord
	b, err := os.ReadFile(p)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", p, err)
	}
	if r.Machine != filepath.Base(p) {
		return r, fmt.Errorf("%s: record of machine %q", p, r.Machine)
	}
	return r, nil
}

// readNameRecords reads the live records of the names directory dir: those
// whose supervisor still runs. A record of a supervisor that is gone (it
// crashed, or was killed, before it could remove it) is removed.
func readNameRecords(dir string) ([]NameRecord, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []NameRecord
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || rundir.CheckName(e.Name()) != nil || !e.Type().IsRegular() {
			continue // a record being written, or not a record
		}
		p := filepath.Join(dir, e.Name())
		r, err := readNameRecord(p)
		if err != nil {
			continue
		}
		if !procstat.Alive(r.SupervisorPID, r.SupervisorStart) {
			_ = RemoveNameRecord(dir, r.Machine, r.SupervisorPID)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// ResolverConfig is what a network's DNS resolver runs with (RUN/networks/NET/dns.json).
type ResolverConfig struct {
	Network string `json:"network"`
	// Domain is the machines' domain: web is also web.DOMAIN.
	Domain string `json:"domain"`
	// Listen are the gateway addresses it answers on (port 53, UDP and TCP).
	Listen []netip.Addr `json:"listen"`
	// Subnets are the network's subnets: queries from elsewhere are refused,
	// and reverse lookups in them are answered here, never forwarded.
	Subnets []netip.Prefix `json:"subnets"`
	// Upstreams are where other queries go; empty: the host's resolv.conf's
	// nameservers, read again when it changes.
	Upstreams []netip.Addr `json:"upstreams,omitempty"`
	// NamesDir is the directory of the machines' name records.
	NamesDir string `json:"namesDir"`
	// Port is the port to answer on; 0 is 53 (tests choose another).
	Port uint16 `json:"port,omitempty"`
}

// Validate checks what can be checked without looking at the host.
func (c ResolverConfig) Validate() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("network %q: resolver: "+format+": %w", append(append([]any{c.Network}, args...), ErrInvalid)...)
	}
	if _, ok := dns.IsDomainName(c.Domain); !ok || c.Domain == "" {
		return fail("domain %q is not a domain name", c.Domain)
	}
	if len(c.Listen) == 0 {
		return fail("no address to answer on (the network has no gateway)")
	}
	if len(c.Subnets) == 0 {
		return fail("no subnet")
	}
	if c.NamesDir == "" {
		return fail("no names directory")
	}
	return nil
}

// The limits that keep one machine from starving the others.
const (
	// clientRate and clientBurst bound the queries of one source address
	// (a token bucket): a machine that sends more has the excess dropped.
	clientRate  = 200 // per second
	clientBurst = 400
	// maxForwards bounds the queries waiting for an upstream server at once,
	// and maxClientForwards those of one source address; a query over the
	// bound gets SERVFAIL at once, so a client flooding names that need
	// forwarding cannot use up the resolver's sockets.
	maxForwards       = 128
	maxClientForwards = 16
	// maxTCPConns bounds the open TCP connections, maxClientTCPConns those
	// of one source address.
	maxTCPConns       = 64
	maxClientTCPConns = 8
	// localTTL is the TTL of the machines' records: names follow machines as
	// they start, stop and move, so caches must not keep them long.
	localTTL = 5
	// forwardTimeout is how long one upstream server has to answer.
	forwardTimeout = 2 * time.Second
)

// bucket is one source address's token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

// take spends one token, refilled at rate per second up to burst; false when
// none is left.
func (b *bucket) take(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// names is the resolver's view of the network at one moment: the machines
// by name and by address. It is replaced as a whole when records change.
type names struct {
	domain  string // lowercase, with the trailing dot: "berth."
	subnets []netip.Prefix
	byName  map[string]NameRecord
	byAddr  map[netip.Addr]string
}

func newNames(domain string, subnets []netip.Prefix, recs []NameRecord) *names {
	n := &names{domain: dns.Fqdn(strings.ToLower(domain)), subnets: subnets, byName: map[string]NameRecord{}, byAddr: map[netip.Addr]string{}}
	for _, r := range recs {
		n.byName[r.Machine] = r
		for _, a := range []netip.Addr{r.Addr4, r.Addr6} {
			if a.IsValid() {
				n.byAddr[a] = r.Machine
			}
		}
	}
	return n
}

// inSubnets reports whether a is an address of the network.
func (n *names) inSubnets(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range n.subnets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// answer is the reply to a query the resolver answers itself, or nil when it
// is to be forwarded. It answers for NAME (a single label that is a
// machine's name) and for everything in the domain (NXDOMAIN for names
// it does not have), and for reverse lookups of addresses in the network's
// subnets.
func (n *names) answer(req *dns.Msg) *dns.Msg {
	if len(req.Question) != 1 {
		return nil
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		return nil
	}
	name := strings.ToLower(q.Name)
	reply := func(rcode int, rrs ...dns.RR) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		m.Authoritative = true
		m.RecursionAvailable = true
		m.Answer = rrs
		if rcode == dns.RcodeNameError || len(rrs) == 0 {
			m.Ns = []dns.RR{n.soa()}
		}
		return m
	}
	if a, ok := reverseAddr(name); ok {
		if !n.inSubnets(a) {
			return nil
		}
		machine, ok := n.byAddr[a.Unmap()]
		if !ok {
			return reply(dns.RcodeNameError)
		}
		if q.Qtype != dns.TypePTR && q.Qtype != dns.TypeANY {
			return reply(dns.RcodeSuccess)
		}
		return reply(dns.RcodeSuccess, &dns.PTR{Hdr: n.hdr(q.Name, dns.TypePTR), Ptr: machine + "." + n.domain})
	}
	label, inDomain := strings.CutSuffix(name, "."+n.domain)
	switch {
	case name == n.domain:
		return reply(dns.RcodeSuccess)
	case inDomain:
	case dns.CountLabel(name) == 1:
		label = strings.TrimSuffix(name, ".")
		if _, ok := n.byName[label]; !ok {
			return nil // a single-label name that is no machine's: the upstream's
		}
	default:
		return nil
	}
	r, ok := n.byName[label]
	if !ok {
		return reply(dns.RcodeNameError)
	}
	var rrs []dns.RR
	if r.Addr4.IsValid() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY) {
		rrs = append(rrs, &dns.A{Hdr: n.hdr(q.Name, dns.TypeA), A: r.Addr4.AsSlice()})
	}
	if r.Addr6.IsValid() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY) {
		rrs = append(rrs, &dns.AAAA{Hdr: n.hdr(q.Name, dns.TypeAAAA), AAAA: r.Addr6.AsSlice()})
	}
	return reply(dns.RcodeSuccess, rrs...)
}

func (n *names) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: localTTL}
}

// soa is the domain's SOA record, which an NXDOMAIN or empty answer carries
// so that resolvers cache the negative answer only briefly.
func (n *names) soa() dns.RR {
	return &dns.SOA{Hdr: dns.RR_Header{Name: n.domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: localTTL},
		Ns: "ns." + n.domain, Mbox: "hostmaster." + n.domain, Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: localTTL}
}

// reverseAddr parses a full reverse-lookup name (d.c.b.a.in-addr.arpa. or the
// 32 nibbles of ip6.arpa.) into its address.
func reverseAddr(name string) (netip.Addr, bool) {
	if v4, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		parts := strings.Split(v4, ".")
		if len(parts) != 4 {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(parts[3] + "." + parts[2] + "." + parts[1] + "." + parts[0])
		return a, err == nil
	}
	if v6, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		nib := strings.Split(v6, ".")
		if len(nib) != 32 {
			return netip.Addr{}, false
		}
		var b strings.Builder
		for i := 31; i >= 0; i-- {
			if len(nib[i]) != 1 || !strings.Contains("0123456789abcdef", nib[i]) {
				return netip.Addr{}, false
			}
			b.WriteString(nib[i])
			if i%4 == 0 && i > 0 {
				b.WriteByte(':')
			}
		}
		a, err := netip.ParseAddr(b.String())
		return a, err == nil
	}
	return netip.Addr{}, false
}
