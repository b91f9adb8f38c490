package netconf

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/berthd/berth/internal/testenv"
)

// The golden files testdata/rules/*.nft pin what ApplyRules installs: the
// chains and the compiled expressions of every rule, read back into nft's
// syntax by exprText below, which knows the protocol headers on its own (it
// does not use the model the rules were compiled from). TestInstalledGolden
// reads the expressions ApplyRules hands the kernel, TestGoldenRulesetsInstall
// what the kernel holds afterwards; render (the model's own account, which
// the docs quote) must say the same (TestPlanGolden).

// installedTable is one table as the kernel gets it: chains in the order they
// are added, and each rule's expressions and comment.
type installedTable struct {
	family nftables.TableFamily
	chains []installedChain
}

// compiledTables are the tables ApplyRules(rs) installs, as it builds them.
func compiledTables(t *testing.T, rs Ruleset) []installedTable {
	t.Helper()
	var out []installedTable
	for _, ts := range tables(rs) {
		nt := &nftables.Table{Name: TableName, Family: nftFamily[ts.family]}
		it := installedTable{family: nt.Family}
		for _, c := range ts.chains {
			ic := installedChain{chain: nftChain(nt, c)}
			for _, r := range c.rules {
				e, err := r.exprs()
				if err != nil {
					t.Fatal(err)
				}
				ic.rules = append(ic.rules, installedRule{comment: r.comment, exprs: e})
			}
			it.chains = append(it.chains, ic)
		}
		out = append(out, it)
	}
	return out
}

// kernelTables reads berth's tables back from the kernel, chains in the
// kernel's order.
func kernelTables(t *testing.T, h *Host) []installedTable {
	t.Helper()
	var out []installedTable
	for _, fam := range families {
		nt, err := h.nft.ListTableOfFamily(TableName, nftFamily[fam])
		if err != nil {
			continue // no such table
		}
		chains, err := h.nft.ListChainsOfTableFamily(nt.Family)
		if err != nil {
			t.Fatal(err)
		}
		it := installedTable{family: nt.Family}
		for _, c := range chains {
			if c.Table.Name != TableName {
				continue
			}
			rules, err := h.nft.GetRules(nt, c)
			if err != nil {
				t.Fatal(err)
			}
			ic := installedChain{chain: c}
			for _, r := range rules {
				comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
				ic.rules = append(ic.rules, installedRule{comment: comment, exprs: r.Exprs})
			}
			it.chains = append(it.chains, ic)
		}
		out = append(out, it)
	}
	return out
}

// installedText writes tables in the golden files' syntax.
func installedText(ts []installedTable) string {
	var b strings.Builder
	for i, t := range ts {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "table %s %s {\n", map[nftables.TableFamily]string{nftables.TableFamilyINet: "inet", nftables.TableFamilyBridge: "bridge"}[t.family], TableName)
		for i, c := range t.chains {
			if i > 0 {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "\tchain %s {\n", c.chain.Name)
			if h := chainHeader(c.chain); h != "" {
				b.WriteString("\t\t" + h + "\n")
			}
			for _, r := range c.rules {
				fmt.Fprintf(&b, "\t\t%s comment %q\n", exprText(t.family, r.exprs), r.comment)
			}
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// chainHeader is a base chain's type line ("" for a regular chain).
func chainHeader(c *nftables.Chain) string {
	if c.Hooknum == nil {
		return ""
	}
	hook := map[nftables.ChainHook]string{*nftables.ChainHookPrerouting: "prerouting", *nftables.ChainHookOutput: "output", *nftables.ChainHookPostrouting: "postrouting"}[*c.Hooknum]
	if hook == "" {
		hook = fmt.Sprintf("hook#%d", *c.Hooknum)
	}
	prio, policy := "?", "?"
	if c.Priority != nil {
		prio = fmt.Sprint(int32(*c.Priority))
	}
	if c.Policy != nil {
		policy = map[nftables.ChainPolicy]string{nftables.ChainPolicyAccept: "accept", nftables.ChainPolicyDrop: "drop"}[*c.Policy]
	}
	return fmt.Sprintf("type %s hook %s priority %s; policy %s;", c.Type, hook, prio, policy)
}

// exprText reads one rule's expressions in nft's syntax, as the golden files
// write it: in the inet table, a family check is implied by an address of
// that family (and written as meta nfproto otherwise); in the bridge table
// every dependency is written out. A field is named only where its header is
// known to be there (after the family or ether type check, or the meta
// l4proto one, that makes it that header); anything else comes out as the
// expression itself ([*expr.Payload {…}]), so that a rule compiled wrong
// cannot read like a golden line.
func exprText(fam nftables.TableFamily, es []expr.Any) string {
	r := exprReader{fam: fam, es: es, nfprotoAt: -1}
	for r.i < len(es) {
		r.next()
	}
	if r.nfprotoAt >= 0 && !r.addr {
		r.out = append(r.out[:r.nfprotoAt], append([]string{fmt.Sprintf("meta nfproto ipv%d", r.nfproto)}, r.out[r.nfprotoAt:]...)...)
	}
	return strings.Join(r.out, " ")
}

type exprReader struct {
	fam       nftables.TableFamily
	es        []expr.Any
	i         int
	out       []string
	nfproto   int  // 4 or 6 after a meta nfproto check
	nfprotoAt int  // where in out that check would be written, or -1
	addr      bool // an address of the nfproto family was written
	ether     string
	l4        byte
}

// at returns the expression i places ahead as a T.
func at[T expr.Any](r *exprReader, i int) (T, bool) {
	var zero T
	if r.i+i >= len(r.es) {
		return zero, false
	}
	e, ok := r.es[r.i+i].(T)
	return e, ok
}

// cmp1 is the comparison of register 1 that follows a load.
func (r *exprReader) cmp1(i int) (*expr.Cmp, bool) {
	c, ok := at[*expr.Cmp](r, i)
	if !ok || c.Register != 1 || (c.Op != expr.CmpOpEq && c.Op != expr.CmpOpNeq) {
		return nil, false
	}
	return c, true
}

func op(c *expr.Cmp) string {
	if c.Op == expr.CmpOpNeq {
		return " != "
	}
	return " "
}

func (r *exprReader) emit(n int, s string) {
	r.out = append(r.out, s)
	r.i += n
}

func (r *exprReader) next() {
	switch e := r.es[r.i].(type) {
	case *expr.Meta:
		if r.meta(e) {
			return
		}
	case *expr.Fib:
		if c, ok := r.cmp1(1); ok && e.Register == 1 && e.FlagDADDR && e.ResultADDRTYPE && c.Op == expr.CmpOpEq &&
			string(c.Data) == string(binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)) {
			r.emit(2, "fib daddr type local")
			return
		}
	case *expr.Ct:
		bw, ok := at[*expr.Bitwise](r, 1)
		if c, cok := r.cmp1(2); ok && cok && e.Key == expr.CtKeySTATUS && e.Register == 1 && bw.SourceRegister == 1 && bw.DestRegister == 1 &&
			string(bw.Mask) == string(binaryutil.NativeEndian.PutUint32(0x20)) && isZero(bw.Xor) && c.Op == expr.CmpOpNeq && isZero(c.Data) {
			r.emit(3, "ct status dnat")
			return
		}
	case *expr.Payload:
		if r.payload(e) {
			return
		}
	case *expr.Counter:
		r.emit(1, "counter")
		return
	case *expr.Masq:
		r.emit(1, "masquerade")
		return
	case *expr.Verdict:
		switch e.Kind {
		case expr.VerdictJump:
			r.emit(1, "jump "+e.Chain)
			return
		case expr.VerdictDrop:
			r.emit(1, "drop")
			return
		case expr.VerdictAccept:
			r.emit(1, "accept")
			return
		}
	case *expr.Immediate:
		port, pok := at[*expr.Immediate](r, 1)
		nat, nok := at[*expr.NAT](r, 2)
		a, aok := netip.AddrFromSlice(e.Data)
		if pok && nok && aok && e.Register == 1 && port.Register == 2 && len(port.Data) == 2 && nat.Type == expr.NATTypeDestNAT &&
			nat.RegAddrMin == 1 && nat.RegProtoMin == 2 && (nat.RegAddrMax == 0 || nat.RegAddrMax == 1) && (nat.RegProtoMax == 0 || nat.RegProtoMax == 2) {
			ip := map[uint32]string{unix.NFPROTO_IPV4: "ip", unix.NFPROTO_IPV6: "ip6"}[nat.Family]
			if (ip == "ip") == a.Is4() && ip != "" {
				r.emit(3, fmt.Sprintf("dnat %s to %s", ip, netip.AddrPortFrom(a, binary.BigEndian.Uint16(port.Data))))
				return
			}
		}
	}
	r.emit(1, fmt.Sprintf("[%T %+v]", r.es[r.i], r.es[r.i]))
}

func (r *exprReader) meta(e *expr.Meta) bool {
	c, ok := r.cmp1(1)
	if !ok || e.Register != 1 {
		return false
	}
	switch e.Key {
	case expr.MetaKeyNFPROTO:
		fam := map[string]int{string([]byte{unix.NFPROTO_IPV4}): 4, string([]byte{unix.NFPROTO_IPV6}): 6}[string(c.Data)]
		if r.fam != nftables.TableFamilyINet || c.Op != expr.CmpOpEq || fam == 0 || r.nfprotoAt >= 0 {
			return false
		}
		r.nfproto, r.nfprotoAt = fam, len(r.out)
		r.i += 2
		return true
	case expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME:
		name := strings.TrimRight(string(c.Data), "\x00")
		if c.Op != expr.CmpOpEq || len(c.Data) != unix.IFNAMSIZ || strings.Contains(name, "\x00") {
			return false
		}
		r.emit(2, fmt.Sprintf("%s %q", map[expr.MetaKey]string{expr.MetaKeyIIFNAME: "iifname", expr.MetaKeyOIFNAME: "oifname"}[e.Key], name))
		return true
	case expr.MetaKeyL4PROTO:
		if len(c.Data) != 1 {
			return false
		}
		proto := c.Data[0]
		// inet: `tcp dport N` is the protocol check and the port together.
		if p, ok := at[*expr.Payload](r, 2); ok && r.fam == nftables.TableFamilyINet && c.Op == expr.CmpOpEq && r.nfprotoAt >= 0 &&
			p.Base == expr.PayloadBaseTransportHeader && p.Offset == 2 && p.Len == 2 && p.DestRegister == 1 {
			if pc, ok := r.cmp1(3); ok && pc.Op == expr.CmpOpEq && len(pc.Data) == 2 && (proto == unix.IPPROTO_TCP || proto == unix.IPPROTO_UDP) {
				r.emit(4, fmt.Sprintf("%s dport %d", l4Names[proto], binary.BigEndian.Uint16(pc.Data)))
				return true
			}
		}
		if c.Op == expr.CmpOpEq {
			r.l4 = proto
		}
		name := l4Names[proto]
		if name == "" {
			name = fmt.Sprint(proto)
		}
		r.emit(2, "meta l4proto"+op(c)+name)
		return true
	}
	return false
}

var l4Names = map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_ICMPV6: "ipv6-icmp"}

// headerField is a packet field by where it lies: its name and how its
// value reads.
type headerField struct {
	name string
	show func([]byte) string
}

// etherTypes are the ether types by name. Values are written as the model
// writes them (showAddr, showMAC, showName): what the reader checks on its
// own is where each field lies, not how a value is spelled.
var etherTypes = map[uint64]string{unix.ETH_P_IP: "ip", unix.ETH_P_ARP: "arp", unix.ETH_P_IPV6: "ip6"}

// fieldAt names the field a payload load reads, in the context the rule
// checked so far.
func (r *exprReader) fieldAt(p *expr.Payload) (headerField, bool) {
	type key struct {
		base        expr.PayloadBase
		ctx         string
		offset, len uint32
	}
	ctx := ""
	switch {
	case r.fam == nftables.TableFamilyINet && p.Base == expr.PayloadBaseNetworkHeader:
		ctx = map[int]string{4: "ip", 6: "ip6"}[r.nfproto]
	case r.fam == nftables.TableFamilyBridge && p.Base == expr.PayloadBaseNetworkHeader:
		ctx = r.ether
	case r.fam == nftables.TableFamilyBridge && p.Base == expr.PayloadBaseTransportHeader:
		ctx = l4Names[r.l4]
	case r.fam == nftables.TableFamilyBridge && p.Base == expr.PayloadBaseLLHeader:
		ctx = "ether"
	}
	f, ok := map[key]headerField{
		{expr.PayloadBaseLLHeader, "ether", 6, 6}:             {"ether saddr", showMAC},
		{expr.PayloadBaseLLHeader, "ether", 12, 2}:            {"ether type", showName(etherTypes)},
		{expr.PayloadBaseNetworkHeader, "ip", 12, 4}:          {"ip saddr", showAddr},
		{expr.PayloadBaseNetworkHeader, "ip", 16, 4}:          {"ip daddr", showAddr},
		{expr.PayloadBaseNetworkHeader, "ip6", 8, 16}:         {"ip6 saddr", showAddr},
		{expr.PayloadBaseNetworkHeader, "ip6", 24, 16}:        {"ip6 daddr", showAddr},
		{expr.PayloadBaseNetworkHeader, "arp", 0, 6}:          {"arp htype", showARPHeader},
		{expr.PayloadBaseNetworkHeader, "arp", 6, 2}:          {"arp operation", showName(map[uint64]string{1: "request", 2: "reply"})},
		{expr.PayloadBaseNetworkHeader, "arp", 8, 6}:          {"arp saddr ether", showMAC},
		{expr.PayloadBaseNetworkHeader, "arp", 14, 4}:         {"arp saddr ip", showAddr},
		{expr.PayloadBaseTransportHeader, "udp", 0, 2}:        {"udp sport", showName(nil)},
		{expr.PayloadBaseTransportHeader, "ipv6-icmp", 0, 1}:  {"icmpv6 type", showName(map[uint64]string{134: "nd-router-advert", 135: "nd-neighbor-solicit", 136: "nd-neighbor-advert"})},
		{expr.PayloadBaseTransportHeader, "ipv6-icmp", 8, 16}: {"icmpv6 target", showAddr},
	}[key{p.Base, ctx, p.Offset, p.Len}]
	return f, ok
}

// showARPHeader reads hardware type, protocol type and the two address
// lengths, compared at once, as nft writes them.
func showARPHeader(b []byte) string {
	return fmt.Sprintf("%d arp ptype %s arp hlen %d arp plen %d", binary.BigEndian.Uint16(b), showName(etherTypes)(b[2:4]), b[4], b[5])
}

func (r *exprReader) payload(p *expr.Payload) bool {
	f, ok := r.fieldAt(p)
	if !ok || p.DestRegister != 1 {
		return false
	}
	n, bits := 2, -1 // expressions read; the prefix length when masked
	if bw, ok := at[*expr.Bitwise](r, 1); ok {
		ones, ok := prefixOnes(bw.Mask)
		if !ok || bw.SourceRegister != 1 || bw.DestRegister != 1 || !isZero(bw.Xor) || uint32(len(bw.Mask)) != p.Len {
			return false
		}
		n, bits = 3, ones
	}
	c, ok := r.cmp1(n - 1)
	if !ok || uint32(len(c.Data)) != p.Len {
		return false
	}
	v := f.show(c.Data)
	if bits >= 0 {
		v = fmt.Sprintf("%s/%d", v, bits)
	}
	switch f.name {
	case "ether type":
		if c.Op == expr.CmpOpEq {
			r.ether = v
		}
	case "ip saddr", "ip daddr", "ip6 saddr", "ip6 daddr":
		r.addr = r.addr || r.fam == nftables.TableFamilyINet
	}
	r.emit(n, f.name+op(c)+v)
	return true
}

// prefixOnes is the length of a network mask, which must be contiguous.
func prefixOnes(mask []byte) (int, bool) {
	n, done := 0, false
	for _, b := range mask {
		for i := 7; i >= 0; i-- {
			switch set := b&(1<<i) != 0; {
			case set && done:
				return 0, false
			case set:
				n++
			default:
				done = true
			}
		}
	}
	return n, true
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// TestInstalledGolden pins the expressions ApplyRules installs for each golden
// ruleset (and writes the golden files under -update).
func TestInstalledGolden(t *testing.T) {
	for name, rs := range goldenRulesets {
		t.Run(name, func(t *testing.T) {
			if err := rs.Validate(); err != nil {
				t.Fatal(err)
			}
			testenv.Golden(t, filepath.Join("testdata", "rules", name+".nft"), installedText(compiledTables(t, rs)))
		})
	}
}

// Every golden ruleset installs as its golden file says (read back from the
// kernel) and without drift.
func TestGoldenRulesetsInstall(t *testing.T) {
	ctx := context.Background()
	h, hp := testHost(t)
	for _, br := range []string{lan.Bridge, iso.Bridge} { // forwards need their bridges
		mustSh(t, hp.pid, "ip", "link", "add", br, "type", "bridge")
	}
	for name, rs := range goldenRulesets {
		if err := h.ApplyRules(ctx, rs); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d, err := h.RulesDrift(ctx, rs); err != nil || d != nil {
			t.Fatalf("%s: drift %q, %v", name, d, err)
		}
		got, err := h.Rules(ctx)
		if err != nil || len(got.Guards) != len(rs.Guards) || len(got.Networks) != len(rs.Networks) {
			t.Fatalf("%s: read back %+v, %v", name, got, err)
		}
		path := filepath.Join("testdata", "rules", name+".nft")
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if d := testenv.Diff(string(want), installedText(kernelTables(t, h))); d != "" {
			t.Errorf("%s: the kernel holds other rules than %s:\n%s", name, path, d)
		}
	}
}

// TestExprTextRefusesWhatItCannotTell: a field read without the check that
// makes it that header, or compared in a way the rules never do, comes out raw.
func TestExprTextRefusesWhatItCannotTell(t *testing.T) {
	saddr := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
	eq := func(b ...byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b} }
	for _, c := range []struct {
		fam  nftables.TableFamily
		es   []expr.Any
		want string
	}{
		{nftables.TableFamilyINet, []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, eq(unix.NFPROTO_IPV4), saddr, eq(10, 0, 0, 1), &expr.Verdict{Kind: expr.VerdictDrop}}, "ip saddr 10.0.0.1 drop"},
		{nftables.TableFamilyINet, []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, eq(unix.NFPROTO_IPV6), saddr, eq(10, 0, 0, 1)}, "meta nfproto ipv6 [*expr.Payload"},
		{nftables.TableFamilyINet, []expr.Any{saddr, eq(10, 0, 0, 1)}, "[*expr.Payload"},
		{nftables.TableFamilyBridge, []expr.Any{saddr, eq(10, 0, 0, 1)}, "[*expr.Payload"},
		{nftables.TableFamilyBridge, []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2}, eq(8, 6), saddr, eq(10, 0, 0, 1)}, "ether type arp [*expr.Payload"},
		{nftables.TableFamilyINet, []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, eq('b', 'r')}, "[*expr.Meta"},
		{nftables.TableFamilyINet, []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, eq(unix.NFPROTO_IPV4), saddr,
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 0, 255, 0}, Xor: make([]byte, 4)}, eq(10, 0, 0, 0)}, "meta nfproto ipv4 [*expr.Payload"},
	} {
		if got := exprText(c.fam, c.es); !strings.HasPrefix(got, c.want) {
			t.Errorf("exprText(%v) = %q, want it to start with %q", c.es, got, c.want)
		}
	}
}
