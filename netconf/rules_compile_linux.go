package netconf

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Compiling berth's rules into the nftables expressions ApplyRules installs
// and RulesDrift compares with what is installed.

// exprs compiles the rule into nftables expressions, the way nft compiles the
// text render shows. Every rule that looks at an address or NATs checks the
// family first: in an inet table the same chain sees IPv4 and IPv6 packets.
func (r ruleSpec) exprs() ([]expr.Any, error) {
	e := r.metaExprs()
	addrs, err := r.addrExprs()
	if err != nil {
		return nil, err
	}
	e = append(e, addrs...)
	e = append(e, r.portExprs()...)
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
	return append(e, r.verdictExprs()...), nil
}

// cmpReg compares register 1, where every match loads its field, with data.
func cmpReg(op expr.CmpOp, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: op, Register: 1, Data: data}
}

// metaExprs are the rule's matches on what the kernel knows of a packet
// beside its headers: its family, its interfaces, whether its destination is
// one of the host's addresses, whether its connection was destination-NATed.
func (r ruleSpec) metaExprs() []expr.Any {
	var e []expr.Any
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
	return e
}

// addrExprs are the rule's matches on the source and destination address: the
// address field of the network header, masked to the prefix unless it is a
// single address. An address of the other family than the rule's is a bug in
// the plan, refused rather than compiled into a rule that never matches.
func (r ruleSpec) addrExprs() ([]expr.Any, error) {
	var e []expr.Any
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
	return e, nil
}

// portExprs match the rule's transport protocol and destination port (the
// port is at the same offset in TCP and UDP headers).
func (r ruleSpec) portExprs() []expr.Any {
	if r.proto == "" {
		return nil
	}
	proto := byte(unix.IPPROTO_TCP)
	if r.proto == "udp" {
		proto = unix.IPPROTO_UDP
	}
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmpReg(expr.CmpOpEq, []byte{proto}),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		cmpReg(expr.CmpOpEq, binaryutil.BigEndian.PutUint16(r.dport))}
}

// verdictExprs are what the rule does with a packet that matched: jump, drop,
// accept, masquerade or DNAT to r.to; none for vNone (on to the next rule).
func (r ruleSpec) verdictExprs() []expr.Any {
	switch r.verdict {
	case vJump:
		return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: r.jump}}
	case vDrop:
		return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}
	case vAccept:
		return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
	case vMasquerade:
		return []expr.Any{&expr.Masq{}}
	case vDNAT:
		fam := uint32(unix.NFPROTO_IPV4)
		if r.to.Addr().Is6() {
			fam = unix.NFPROTO_IPV6
		}
		return []expr.Any{
			&expr.Immediate{Register: 1, Data: r.to.Addr().AsSlice()},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(r.to.Port())},
			// The max registers equal the min ones, which is what the kernel
			// reports back; said explicitly so that drift checks compare equal.
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: 2, RegProtoMax: 2, Specified: true},
		}
	}
	return nil
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
	return []expr.Any{load, cmpReg(op, c.val)}, nil
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
