package netconf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ApplyRules makes berth's nftables tables hold exactly rs: `inet berth` the
// networks' NAT, forwards and localhost guards, `bridge berth` the machines'
// anti-spoofing guards. Both tables are replaced whole in one netlink batch,
// which the kernel applies atomically: no packet ever sees half of the old and
// half of the new rules, and a failure leaves the old tables as they were. A
// table rs does not need is deleted (an empty ruleset deletes both).
//
// It also turns on what the rules need in the Host's namespace: IPv4 and IPv6
// forwarding when a network masquerades or has forwards of that family (never
// turned off again: other things on the host may rely on it), and
// route_localnet on the bridges of networks with IPv4 forwards, so that
// connections from the host's 127.0.0.1 can be forwarded (it is turned off on
// berth's other bridges; the guard chain keeps it safe).
//
// Connections to [::1] cannot be forwarded by the kernel (there is no
// route_localnet for IPv6: replies addressed to ::1 that arrive on a bridge are
// dropped as martians), so IPv6 forwards leave [::1] alone; LoopbackProxy
// serves it.
func (h *Host) ApplyRules(ctx context.Context, rs Ruleset) error {
	if err := rs.Validate(); err != nil {
		return fmt.Errorf("nftables tables %s: %w", TableName, err)
	}
	want := tables(rs)
	h.rulesMu.Lock()
	defer h.rulesMu.Unlock()

	links, err := retryDump(ctx, h.nl.LinkList)
	if err != nil {
		return fmt.Errorf("nftables table inet %s: list links: %w", TableName, err)
	}
	// route_localnet goes off before the guard could disappear, and on only
	// after the guard is in place. All sysctls of a phase are written in one
	// trip into the namespace.
	var off, on []sysctlSetting
	for br, want := range localnetBridges(rs, links) {
		s := sysctlSetting{key: "net/ipv4/conf/" + br + "/route_localnet", value: "0", what: "bridge " + br}
		if want {
			s.value = "1"
			on = append(on, s)
		} else {
			s.optional = true
			off = append(off, s)
		}
	}
	need4, need6 := forwardingNeeded(rs)
	if need4 {
		on = append(on, sysctlSetting{key: "net/ipv4/ip_forward", value: "1"})
	}
	if need6 {
		on = append(on, sysctlSetting{key: "net/ipv6/conf/all/forwarding", value: "1", before: func() { h.warnAcceptRA(ctx, links) }})
	}
	if err := h.setSysctls(off); err != nil {
		return err
	}

	// Compile every rule before queueing anything: the connection's batch is
	// only ever sent whole.
	exprs := make([][][][]expr.Any, len(want))
	for ti, t := range want {
		exprs[ti] = make([][][]expr.Any, len(t.chains))
		for i, c := range t.chains {
			for _, r := range c.rules {
				e, err := r.exprs()
				if err != nil {
					return fmt.Errorf("nftables table %s %s: chain %s: %w", t.family, TableName, c.name, err)
				}
				exprs[ti][i] = append(exprs[ti][i], e)
			}
		}
	}
	if err := h.growNftBuf(want); err != nil {
		return fmt.Errorf("nftables tables %s: %w", TableName, err)
	}
	for _, fam := range families {
		nt := &nftables.Table{Name: TableName, Family: nftFamily[fam]}
		// Adding the table first makes the delete succeed when there is none:
		// "add, delete, add" is how `nft -f` replaces a table in one transaction.
		h.nft.AddTable(nt)
		h.nft.DelTable(nt)
		for ti, t := range want {
			if t.family != fam {
				continue
			}
			h.nft.AddTable(nt)
			// Every chain before any rule: a jump needs its target chain.
			added := make([]*nftables.Chain, len(t.chains))
			for i, c := range t.chains {
				added[i] = h.nft.AddChain(nftChain(nt, c))
			}
			for i, c := range t.chains {
				for j, r := range c.rules {
					h.nft.AddRule(&nftables.Rule{Table: nt, Chain: added[i], Exprs: exprs[ti][i][j], UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment)})
				}
			}
		}
	}
	if err := h.nft.Flush(); err != nil {
		// The kernel rejected the whole batch and the old tables stand. Start
		// afresh on a new socket, so no unread reply of this batch can be
		// taken for the answer to the next request.
		if nc, nerr := dialNft(h.ns, h.nftBuf); nerr == nil {
			_ = h.nft.CloseLasting()
			h.nft = nc
		}
		return fmt.Errorf("nftables tables %s: apply %d tables: %w", TableName, len(want), err)
	}
	if err := h.setSysctls(on); err != nil {
		return err
	}
	slog.DebugContext(ctx, "nftables rules applied", "table", TableName, "networks", len(rs.Networks), "forwards", len(rs.Forwards), "guards", len(rs.Guards))
	return nil
}

// GuardPort installs one machine's anti-spoofing guard in the table bridge
// berth, beside whatever the table holds (the base chain and the table are
// made when missing, the machine's own chain is filled anew, its jump added
// when the base chain lacks it), in one batch. Attach calls it before the
// machine's port joins its bridge; the next ApplyRules, which replaces the
// table as a whole with the guards of every running machine, keeps it.
// Equivalent to `nft add chain bridge berth machine-NAME` and its rules.
func (h *Host) GuardPort(ctx context.Context, g Guard) error {
	chains := planBridge(Ruleset{Guards: []Guard{g}})
	compiled := make([][][]expr.Any, len(chains))
	for i, c := range chains {
		for _, r := range c.rules {
			e, err := r.exprs()
			if err != nil {
				return fmt.Errorf("machine %q: guard: %w", g.Machine, err)
			}
			compiled[i] = append(compiled[i], e)
		}
	}
	h.rulesMu.Lock()
	defer h.rulesMu.Unlock()
	nt := &nftables.Table{Name: TableName, Family: nftables.TableFamilyBridge}
	h.nft.AddTable(nt)
	base := h.nft.AddChain(nftChain(nt, chains[0]))
	own := h.nft.AddChain(nftChain(nt, chains[1]))
	h.nft.FlushChain(own)
	for j, e := range compiled[1] {
		h.nft.AddRule(&nftables.Rule{Table: nt, Chain: own, Exprs: e, UserData: userdata.AppendString(nil, userdata.TypeComment, chains[1].rules[j].comment)})
	}
	if err := h.nft.Flush(); err != nil {
		return fmt.Errorf("machine %q: guard chain in bridge %s: %w", g.Machine, TableName, err)
	}
	rules, err := h.nft.GetRules(nt, base)
	if err != nil {
		return fmt.Errorf("machine %q: read bridge %s prerouting: %w", g.Machine, TableName, err)
	}
	for _, r := range rules {
		if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && c == chains[0].rules[0].comment {
			return nil // a run before this one left it, for the same addresses
		}
	}
	h.nft.AddRule(&nftables.Rule{Table: nt, Chain: base, Exprs: compiled[0][0], UserData: userdata.AppendString(nil, userdata.TypeComment, chains[0].rules[0].comment)})
	if err := h.nft.Flush(); err != nil {
		return fmt.Errorf("machine %q: guard jump in bridge %s: %w", g.Machine, TableName, err)
	}
	slog.DebugContext(ctx, "guard installed", "machine", g.Machine, "port", g.HostIf)
	return nil
}

// minNftBuf is the least send and receive buffer of the nftables socket; the
// kernel's defaults (208 KiB) hold a batch of, and the replies to, about 200
// rules.
const minNftBuf = 1 << 20

// nftBufFor is the socket buffer a batch installing ts needs. The batch goes
// to the kernel in one send, which must fit the send buffer, and the kernel
// answers every message of it while it applies it, before ApplyRules reads
// anything — google/nftables asks for every rule to be echoed back (to learn
// its handle) — so a receive buffer too small loses replies (ENOBUFS) of a
// batch that was committed. nft sizes its buffers from the batch the same way.
// 4 KiB per message covers a rule (a guard's longest is under 1 KiB) and its
// echo and acknowledgement with the kernel's per-message overhead.
func nftBufFor(ts []tableSpec) int {
	n := 4 * len(families) // add, delete and add each table, and the batch's ends
	for _, t := range ts {
		n += len(t.chains)
		for _, c := range t.chains {
			n += len(c.rules)
		}
	}
	return max(minNftBuf, n*4096)
}

// growNftBuf reopens the nftables socket with larger buffers when the batch
// for ts needs them: at least twice as large, so that a ruleset growing by a
// machine at a time reopens it rarely. They are never shrunk (a large ruleset
// usually stays).
func (h *Host) growNftBuf(ts []tableSpec) error {
	need := nftBufFor(ts)
	if need <= h.nftBuf {
		return nil
	}
	need = max(need, 2*h.nftBuf)
	nc, err := dialNft(h.ns, need)
	if err != nil {
		return err
	}
	_ = h.nft.CloseLasting()
	h.nft, h.nftBuf = nc, need
	return nil
}

// sysctlSetting is one value to write under /proc/sys.
type sysctlSetting struct {
	key, value string
	what       string // the object, for messages
	optional   bool   // a missing key (the link is gone) is fine
	before     func() // runs in the namespace before a change of the value
}

// setSysctls writes the settings in one trip into the Host's namespace.
func (h *Host) setSysctls(list []sysctlSetting) error {
	if len(list) == 0 {
		return nil
	}
	return h.do(func() error {
		for _, s := range list {
			if s.before != nil {
				if cur, err := os.ReadFile(filepath.Join("/proc/sys", s.key)); err == nil && strings.TrimSpace(string(cur)) != s.value {
					s.before()
				}
			}
			err := writeSysctl(s.key, s.value)
			switch {
			case err == nil:
			case errors.Is(err, os.ErrNotExist) && s.optional:
			case errors.Is(err, os.ErrNotExist) && s.what != "":
				return fmt.Errorf("%s: does not exist; ensure the network's bridge before its rules: %w", s.what, ErrNotFound)
			case s.what != "":
				return fmt.Errorf("%s: %w", s.what, err)
			default:
				return err
			}
		}
		return nil
	})
}

// localnetBridges says for each bridge whether route_localnet must be on: on
// for networks with IPv4 forwards, off for every other bridge berth made. A
// bridge berth did not make is never changed (forwards from 127.0.0.1 to its
// machines then do not work; from the host's other addresses they do).
func localnetBridges(rs Ruleset, links []netlink.Link) map[string]bool {
	want := map[string]bool{}
	for _, f := range rs.Forwards {
		if n, ok := rs.networkOf(f.Addr); ok && f.Addr.Is4() {
			want[n.Bridge] = true
		}
	}
	for _, l := range links {
		name := l.Attrs().Name
		ours := l.Type() == "bridge" && strings.HasPrefix(l.Attrs().Alias, aliasPrefix)
		switch {
		case ours && !want[name]:
			want[name] = false
		case !ours && want[name]:
			delete(want, name)
		}
	}
	return want
}

func forwardingNeeded(rs Ruleset) (v4, v6 bool) {
	for _, n := range rs.Networks {
		v4 = v4 || (n.Masquerade && n.Subnet4.IsValid())
		v6 = v6 || (n.Masquerade && n.Subnet6.IsValid())
	}
	for _, f := range rs.Forwards {
		v4 = v4 || f.Addr.Is4()
		v6 = v6 || f.Addr.Is6()
	}
	return v4, v6
}

// warnAcceptRA warns, when IPv6 forwarding is about to go on, about
// interfaces that take their IPv6 configuration from router advertisements:
// with forwarding on, accept_ra=1 ignores them and the host loses its IPv6
// default route when it expires (the trap Docker documents). berth does not
// change the host's uplinks; the person can set accept_ra=2. It runs inside the
// Host's namespace (from setSysctls).
func (h *Host) warnAcceptRA(ctx context.Context, links []netlink.Link) {
	var ifs []string
	for _, l := range links {
		name := l.Attrs().Name
		if strings.HasPrefix(l.Attrs().Alias, aliasPrefix) || l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + name + "/accept_ra"); err == nil && strings.TrimSpace(string(b)) == "1" {
			ifs = append(ifs, name)
		}
	}
	if len(ifs) > 0 {
		slog.WarnContext(ctx, "turning on IPv6 forwarding for berth's networks: these interfaces will stop accepting router advertisements; set net.ipv6.conf.IF.accept_ra=2 on those that need them",
			"interfaces", strings.Join(ifs, ","))
	}
}

// nftFamily maps the families of berth's tables to nftables'.
var nftFamily = map[string]nftables.TableFamily{
	familyInet:   nftables.TableFamilyINet,
	familyBridge: nftables.TableFamilyBridge,
}

func nftChain(t *nftables.Table, c chainSpec) *nftables.Chain {
	ch := &nftables.Chain{Name: c.name, Table: t}
	if c.hook == "" {
		return ch
	}
	ch.Type = nftables.ChainType(c.kind)
	// The bridge family's NF_BR_PRE_ROUTING is the same number as
	// NF_INET_PRE_ROUTING.
	ch.Hooknum = map[string]*nftables.ChainHook{
		"prerouting":  nftables.ChainHookPrerouting,
		"output":      nftables.ChainHookOutput,
		"postrouting": nftables.ChainHookPostrouting,
	}[c.hook]
	ch.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(c.priority))
	accept := nftables.ChainPolicyAccept
	ch.Policy = &accept
	return ch
}

// exprs compiles the rule into nftables expressions, the way nft compiles the
// text render shows. Every rule that looks at an address or NATs checks the
// family first: in an inet table the same chain sees IPv4 and IPv6 packets.
func (r ruleSpec) exprs() ([]expr.Any, error) {
	var e []expr.Any
	cmpReg := func(op expr.CmpOp, data []byte) *expr.Cmp { return &expr.Cmp{Op: op, Register: 1, Data: data} }
	switch r.family {
	case 4:
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmpReg(expr.CmpOpEq, []byte{unix.NFPROTO_IPV4}))
	case 6:
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmpReg(expr.CmpOpEq, []byte{unix.NFPROTO_IPV6}))
	}
	if r.iif != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, cmpReg(expr.CmpOpEq, ifnameData(r.iif)))
	}
	if r.oif != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, cmpReg(expr.CmpOpEq, ifnameData(r.oif)))
	}
	if r.fibLocal {
		e = append(e, &expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			cmpReg(expr.CmpOpEq, binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)))
	}
	if r.ctDNAT {
		e = append(e, &expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(0x20), // IPS_DST_NAT
				Xor:  make([]byte, 4)},
			cmpReg(expr.CmpOpNeq, make([]byte, 4)))
	}
	for _, m := range []struct {
		p   netip.Prefix
		neg bool
		dst bool
	}{{r.saddr, r.saddrNeg, false}, {r.daddr, r.daddrNeg, true}} {
		if !m.p.IsValid() {
			continue
		}
		if familyOf(m.p.Addr()) != r.family {
			return nil, fmt.Errorf("rule %q: address %s in an IPv%d rule", r.comment, m.p, r.family)
		}
		size := uint32(m.p.Addr().BitLen() / 8)
		off := uint32(12) // IPv4 source; destination follows at 16
		if size == 16 {
			off = 8 // IPv6 source; destination at 24
		}
		if m.dst {
			off += size
		}
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size})
		if !m.p.IsSingleIP() {
			e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: prefixMask(m.p), Xor: make([]byte, size)})
		}
		op := expr.CmpOpEq
		if m.neg {
			op = expr.CmpOpNeq
		}
		e = append(e, cmpReg(op, m.p.Masked().Addr().AsSlice()))
	}
	if r.proto != "" {
		proto := byte(unix.IPPROTO_TCP)
		if r.proto == "udp" {
			proto = unix.IPPROTO_UDP
		}
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmpReg(expr.CmpOpEq, []byte{proto}),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			cmpReg(expr.CmpOpEq, binaryutil.BigEndian.PutUint16(r.dport)))
	}
	for _, c := range r.conds {
		ce, err := c.exprs()
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", r.comment, err)
		}
		e = append(e, ce...)
	}
	if r.counter {
		e = append(e, &expr.Counter{})
	}
	switch r.verdict {
	case vJump:
		e = append(e, &expr.Verdict{Kind: expr.VerdictJump, Chain: r.jump})
	case vDrop:
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	case vAccept:
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	case vMasquerade:
		e = append(e, &expr.Masq{})
	case vDNAT:
		fam := uint32(unix.NFPROTO_IPV4)
		if r.to.Addr().Is6() {
			fam = unix.NFPROTO_IPV6
		}
		e = append(e,
			&expr.Immediate{Register: 1, Data: r.to.Addr().AsSlice()},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(r.to.Port())},
			// The max registers equal the min ones, which is what the kernel
			// reports back; said explicitly so that drift checks compare equal.
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: 2, RegProtoMax: 2, Specified: true})
	}
	return e, nil
}

// exprs loads the field into register 1 and compares it. A field the packet
// does not have (a transport header the kernel could not find, say) ends the
// rule without a match, as in nft.
func (c cond) exprs() ([]expr.Any, error) {
	if uint32(len(c.val)) != c.f.len {
		return nil, fmt.Errorf("%s: a %d-byte value for a %d-byte field", c, len(c.val), c.f.len)
	}
	var load expr.Any
	switch c.f.base {
	case baseL4Proto:
		load = &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}
	default:
		base := map[fieldBase]expr.PayloadBase{
			baseLL: expr.PayloadBaseLLHeader,
			baseNH: expr.PayloadBaseNetworkHeader,
			baseTH: expr.PayloadBaseTransportHeader,
		}[c.f.base]
		load = &expr.Payload{DestRegister: 1, Base: base, Offset: c.f.offset, Len: c.f.len}
	}
	op := expr.CmpOpEq
	if c.neg {
		op = expr.CmpOpNeq
	}
	return []expr.Any{load, &expr.Cmp{Op: op, Register: 1, Data: c.val}}, nil
}

// ifnameData is an interface name as the kernel compares it: NUL-padded to
// IFNAMSIZ, so "br-a" does not also match "br-ab".
func ifnameData(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func prefixMask(p netip.Prefix) []byte {
	b := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return b
}

// Rules reads berth's installed tables back as a Ruleset (from the comments
// berth puts on its rules). A missing table is an empty part of the ruleset.
func (h *Host) Rules(ctx context.Context) (Ruleset, error) {
	var rs Ruleset
	for _, fam := range families {
		installed, ok, err := h.installedRules(fam)
		if err != nil || !ok {
			if err != nil {
				return rs, err
			}
			continue
		}
		for _, name := range slices.Sorted(maps.Keys(installed)) {
			for _, r := range installed[name].rules {
				switch fam {
				case familyInet:
					if n, ok := parseNetworkComment(r.comment); ok {
						rs.Networks = append(rs.Networks, n)
					}
					if f, ok := parseForwardComment(r.comment); ok {
						rs.Forwards = append(rs.Forwards, f)
					}
				case familyBridge:
					if g, ok := parseGuardComment(r.comment); ok && name == "prerouting" {
						rs.Guards = append(rs.Guards, g)
					}
				}
			}
		}
	}
	return rs, nil
}

type installedChain struct {
	chain *nftables.Chain
	rules []installedRule
}

type installedRule struct {
	comment string
	exprs   []expr.Any
}

// installedRules reads berth's table of the family, chain by chain; ok is
// false when there is no such table.
func (h *Host) installedRules(fam string) (map[string]installedChain, bool, error) {
	h.rulesMu.Lock()
	defer h.rulesMu.Unlock()
	what := "nftables table " + fam + " " + TableName
	t, err := h.nft.ListTableOfFamily(TableName, nftFamily[fam])
	if errors.Is(err, unix.ENOENT) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", what, err)
	}
	chains, err := h.nft.ListChainsOfTableFamily(nftFamily[fam])
	if err != nil {
		return nil, false, fmt.Errorf("%s: list chains: %w", what, err)
	}
	out := map[string]installedChain{}
	for _, c := range chains {
		if c.Table.Name != TableName {
			continue
		}
		rules, err := h.nft.GetRules(t, c)
		if err != nil {
			return nil, false, fmt.Errorf("%s: chain %s: %w", what, c.Name, err)
		}
		ic := installedChain{chain: c}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			ic.rules = append(ic.rules, installedRule{comment: comment, exprs: r.Exprs})
		}
		out[c.Name] = ic
	}
	return out, true, nil
}

// RulesDrift compares the installed tables with what ApplyRules(rs) would
// install and describes each difference; nil means they are equal. Rules are
// compared expression by expression (counters aside), so a rule someone edited
// by hand is found even when its comment still looks right.
func (h *Host) RulesDrift(ctx context.Context, rs Ruleset) ([]string, error) {
	if err := rs.Validate(); err != nil {
		return nil, err
	}
	want := map[string][]chainSpec{}
	for _, t := range tables(rs) {
		want[t.family] = t.chains
	}
	var drift []string
	for _, fam := range families {
		installed, ok, err := h.installedRules(fam)
		if err != nil {
			return nil, err
		}
		var d []string
		if fam == familyBridge && ok && want[fam] != nil {
			d, err = guardsDrift(installed, want[fam])
		} else {
			d, err = tableDrift(fam, installed, ok, want[fam])
		}
		if err != nil {
			return nil, err
		}
		drift = append(drift, d...)
	}
	return drift, nil
}

// tableDrift compares one installed table (present says whether there is one)
// with the chains wanted of it (none: no table is wanted).
func tableDrift(fam string, installed map[string]installedChain, present bool, want []chainSpec) ([]string, error) {
	table := "table " + fam + " " + TableName
	switch {
	case want == nil && present:
		return []string{table + " exists but no rules are wanted in it"}, nil
	case want == nil:
		return nil, nil
	case !present:
		return []string{table + " is missing"}, nil
	}
	var drift []string
	names := map[string]bool{}
	for _, c := range want {
		names[c.name] = true
		ic, ok := installed[c.name]
		if !ok {
			drift = append(drift, table+": chain "+c.name+" is missing")
			continue
		}
		d, err := chainDrift(fam, c, ic)
		if err != nil {
			return nil, err
		}
		if d != "" {
			drift = append(drift, table+": chain "+c.name+" "+d)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(installed)) {
		if !names[name] {
			drift = append(drift, table+": unexpected chain "+name)
		}
	}
	return drift, nil
}

// chainDrift compares an installed chain with the wanted one: "" when equal,
// else its first difference and how many more there are (one line per chain:
// a flushed guard chain would otherwise be a line per rule).
func chainDrift(fam string, c chainSpec, ic installedChain) (string, error) {
	var diffs []string
	wc := nftChain(ic.chain.Table, c)
	if c.hook != "" && (ic.chain.Type != wc.Type || ic.chain.Hooknum == nil || *ic.chain.Hooknum != *wc.Hooknum ||
		ic.chain.Priority == nil || *ic.chain.Priority != *wc.Priority) {
		diffs = append(diffs, "has the wrong type, hook or priority")
	}
	for i, r := range c.rules {
		if i >= len(ic.rules) {
			diffs = append(diffs, fmt.Sprintf("lacks rule %q", r.comment))
			continue
		}
		got := ic.rules[i]
		exprs, err := r.exprs()
		if err != nil {
			return "", err
		}
		if got.comment != r.comment || !sameExprs(nftFamily[fam], got.exprs, exprs) {
			diffs = append(diffs, fmt.Sprintf("rule %d is %q, want %q", i+1, got.comment, r.comment))
		}
	}
	for _, r := range ic.rules[min(len(ic.rules), len(c.rules)):] {
		diffs = append(diffs, fmt.Sprintf("has unexpected rule %q", r.comment))
	}
	if len(diffs) == 0 {
		return "", nil
	}
	if len(diffs) > 1 {
		return fmt.Sprintf("%s (and %d more)", diffs[0], len(diffs)-1), nil
	}
	return diffs[0], nil
}

// guardsDrift is tableDrift for an installed `bridge berth` that is wanted,
// told machine by machine, as `berth plan` shows it: which machine lacks its
// guard, whose guard differs, which has one it should not have. The order of
// the jumps does not matter (each matches its own port).
func guardsDrift(installed map[string]installedChain, want []chainSpec) ([]string, error) {
	table := "table bridge " + TableName
	pre, wpre := installed[want[0].name], want[0]
	if pre.chain == nil {
		return tableDrift(familyBridge, installed, true, want)
	}
	var drift []string
	if d, err := chainDrift(familyBridge, chainSpec{name: wpre.name, kind: wpre.kind, hook: wpre.hook, priority: wpre.priority}, installedChain{chain: pre.chain}); err != nil {
		return nil, err
	} else if d != "" {
		drift = append(drift, table+": chain "+wpre.name+" "+d)
	}
	jumps := map[string]installedRule{} // the installed guards, by machine
	for _, r := range pre.rules {
		if g, ok := parseGuardComment(r.comment); ok {
			if _, dup := jumps[g.Machine]; !dup {
				jumps[g.Machine] = r
				continue
			}
		}
		drift = append(drift, fmt.Sprintf("%s: chain %s has unexpected rule %q", table, wpre.name, r.comment))
	}
	chains := map[string]chainSpec{}
	for _, c := range want[1:] {
		chains[c.name] = c
	}
	known := map[string]bool{wpre.name: true}
	for _, wr := range wpre.rules {
		g, _ := parseGuardComment(wr.comment)
		known[guardChain(g.Machine)] = true
		got, ok := jumps[g.Machine]
		if !ok {
			drift = append(drift, fmt.Sprintf("%s: machine %s has no anti-spoofing guard", table, g.Machine))
			continue
		}
		delete(jumps, g.Machine)
		exprs, err := wr.exprs()
		if err != nil {
			return nil, err
		}
		if got.comment != wr.comment || !sameExprs(nftables.TableFamilyBridge, got.exprs, exprs) {
			drift = append(drift, fmt.Sprintf("%s: machine %s's guard is %q, want %q", table, g.Machine, got.comment, wr.comment))
			continue
		}
		c := chains[guardChain(g.Machine)]
		ic, ok := installed[c.name]
		if !ok {
			drift = append(drift, fmt.Sprintf("%s: machine %s's guard: chain %s is missing", table, g.Machine, c.name))
			continue
		}
		d, err := chainDrift(familyBridge, c, ic)
		if err != nil {
			return nil, err
		}
		if d != "" {
			drift = append(drift, fmt.Sprintf("%s: machine %s's guard: chain %s %s", table, g.Machine, c.name, d))
		}
	}
	for _, m := range slices.Sorted(maps.Keys(jumps)) {
		known[guardChain(m)] = true
		drift = append(drift, fmt.Sprintf("%s: machine %s has an anti-spoofing guard it should not have (antiSpoofing: false, or it no longer runs)", table, m))
	}
	for _, name := range slices.Sorted(maps.Keys(installed)) {
		if !known[name] {
			drift = append(drift, table+": unexpected chain "+name)
		}
	}
	return drift, nil
}

// sameExprs compares expression lists by their netlink encoding, leaving out
// counters (whose values change with every packet).
func sameExprs(fam nftables.TableFamily, a, b []expr.Any) bool {
	enc := func(es []expr.Any) ([][]byte, bool) {
		var out [][]byte
		for _, e := range es {
			if _, ok := e.(*expr.Counter); ok {
				continue
			}
			b, err := expr.Marshal(byte(fam), e)
			if err != nil {
				return nil, false
			}
			out = append(out, b)
		}
		return out, true
	}
	ea, ok1 := enc(a)
	eb, ok2 := enc(b)
	return ok1 && ok2 && slices.EqualFunc(ea, eb, bytes.Equal)
}
