package netconf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
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
	off, on := h.rulesSysctls(ctx, rs, links)
	if err := h.setSysctls(off); err != nil {
		return err
	}
	// Compile every rule before queueing anything: the connection's batch is
	// only ever sent whole.
	exprs, err := compileTables(want)
	if err != nil {
		return err
	}
	if err := h.growNftBuf(want); err != nil {
		return fmt.Errorf("nftables tables %s: %w", TableName, err)
	}
	h.queueTables(want, exprs)
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

// rulesSysctls are the settings rs needs, in two phases: off is written before
// the tables are replaced, on after. route_localnet goes off before the guard
// could disappear, and on only after the guard is in place. All sysctls of a
// phase are written in one trip into the namespace.
func (h *Host) rulesSysctls(ctx context.Context, rs Ruleset, links []netlink.Link) (off, on []sysctlSetting) {
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
	return off, on
}

// compileTables compiles every rule of the tables ts: by table, chain and
// rule, the expressions queueTables installs.
func compileTables(ts []tableSpec) ([][][][]expr.Any, error) {
	exprs := make([][][][]expr.Any, len(ts))
	for ti, t := range ts {
		exprs[ti] = make([][][]expr.Any, len(t.chains))
		for i, c := range t.chains {
			e, err := compileRules(c)
			if err != nil {
				return nil, fmt.Errorf("nftables table %s %s: chain %s: %w", t.family, TableName, c.name, err)
			}
			exprs[ti][i] = e
		}
	}
	return exprs, nil
}

// compileRules compiles the rules of chain c, in order.
func compileRules(c chainSpec) ([][]expr.Any, error) {
	var out [][]expr.Any
	for _, r := range c.rules {
		e, err := r.exprs()
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// queueTables queues the replacement of every family's table with the tables
// ts (compiled to exprs by compileTables) on the nftables connection, for one
// Flush to send as one batch. A family ts has no table of ends up with none.
func (h *Host) queueTables(ts []tableSpec, exprs [][][][]expr.Any) {
	for _, fam := range families {
		nt := &nftables.Table{Name: TableName, Family: nftFamily[fam]}
		// Adding the table first makes the delete succeed when there is none:
		// "add, delete, add" is how `nft -f` replaces a table in one transaction.
		h.nft.AddTable(nt)
		h.nft.DelTable(nt)
		for ti, t := range ts {
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
		e, err := compileRules(c)
		if err != nil {
			return fmt.Errorf("machine %q: guard: %w", g.Machine, err)
		}
		compiled[i] = e
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
