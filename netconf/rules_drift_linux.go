package netconf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Reading berth's installed tables back, and telling how they differ from a
// Ruleset: the changes `berth plan` shows for the rules.

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
