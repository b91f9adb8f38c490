package userns

import (
	"encoding/binary"
	"strings"
	"testing"
)

// aclEntry is one entry of a POSIX ACL as tests write it.
type aclEntry struct {
	tag, perm uint16
	id        uint32
}

// aclXattr builds a system.posix_acl_* value as the kernel takes it (there
// is no setfacl on the test host).
func aclXattr(entries ...aclEntry) []byte {
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// capXattr builds a security.capability value of a revision (1, 2, 3) with
// the effective flag and the permitted set (the low 64 capabilities).
func capXattr(rev int, permitted uint64, rootID uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(rev)<<24|1)
	b = binary.LittleEndian.AppendUint32(b, uint32(permitted))
	b = binary.LittleEndian.AppendUint32(b, 0)
	if rev == 1 {
		return b
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(permitted>>32))
	b = binary.LittleEndian.AppendUint32(b, 0)
	if rev == 3 {
		b = binary.LittleEndian.AppendUint32(b, rootID)
	}
	return b
}

const (
	aclUserObj  = 0x01
	aclGroupObj = 0x04
	aclMask     = 0x10
	aclOther    = 0x20
	undefinedID = 0xffffffff // the ID field of the tags that have none
)

// plus adds a fixed delta, the shift of the unit tests.
func plus(d uint32) func(uint32) uint32 { return func(x uint32) uint32 { return x + d } }

// TestShiftACL: only named users' and groups' IDs move; the owner, mask
// and other entries keep their undefined ID; garbage is refused.
func TestShiftACL(t *testing.T) {
	in := aclXattr(aclEntry{aclUserObj, 7, undefinedID}, aclEntry{aclUser, 6, 1001}, aclEntry{aclGroupObj, 5, undefinedID},
		aclEntry{aclGroup, 4, 1002}, aclEntry{aclMask, 7, undefinedID}, aclEntry{aclOther, 0, undefinedID})
	orig := string(in)
	out, changed, err := shiftACL(in, plus(0x90000))
	if err != nil || !changed {
		t.Fatalf("shiftACL = %v, %v", changed, err)
	}
	want := aclXattr(aclEntry{aclUserObj, 7, undefinedID}, aclEntry{aclUser, 6, 0x90000 + 1001}, aclEntry{aclGroupObj, 5, undefinedID},
		aclEntry{aclGroup, 4, 0x90000 + 1002}, aclEntry{aclMask, 7, undefinedID}, aclEntry{aclOther, 0, undefinedID})
	if string(out) != string(want) {
		t.Errorf("shiftACL =\n%x, want\n%x", out, want)
	}
	if string(in) != orig {
		t.Error("shiftACL changed its input")
	}
	if _, changed, _ := shiftACL(in, plus(0)); changed {
		t.Error("an identity shift changed the ACL")
	}
	for _, bad := range [][]byte{nil, {1, 0, 0, 0}, append(aclXattr(), 1, 2, 3)} {
		if _, _, err := shiftACL(bad, plus(1)); err == nil {
			t.Errorf("shiftACL(%x) took it", bad)
		}
	}
}

// TestShiftCaps: a revision 2 capability (root 0) shifted into a range is
// revision 3 with the range's base as root; shifted back it is revision 2
// again; revision 1 is widened; the capability sets and the effective flag
// are kept.
func TestShiftCaps(t *testing.T) {
	const base, netRaw = 0x90000, 1 << 13
	for _, tc := range []struct {
		name string
		in   []byte
		d    uint32
		want []byte
	}{
		{"v2 into a range", capXattr(2, netRaw|1<<40, 0), base, capXattr(3, netRaw|1<<40, base)},
		{"v3 to another range", capXattr(3, netRaw, base), 0x10000, capXattr(3, netRaw, base+0x10000)},
		{"v3 back to the host", capXattr(3, netRaw, base), 1<<32 - base, capXattr(2, netRaw, 0)},
		{"v1 into a range", capXattr(1, netRaw, 0), base, capXattr(3, netRaw, base)},
		{"v2 unshifted", capXattr(2, netRaw, 0), 0, capXattr(2, netRaw, 0)},
	} {
		got, err := shiftCaps(tc.in, plus(tc.d))
		if err != nil || string(got) != string(tc.want) {
			t.Errorf("%s: shiftCaps = %x, %v; want %x", tc.name, got, err, tc.want)
		}
	}
	for _, bad := range [][]byte{nil, capXattr(2, 1, 0)[:16], capXattr(3, 1, 0)[:20], append(capXattr(4, 1, 0), 0, 0, 0, 0)} {
		if _, err := shiftCaps(bad, plus(1)); err == nil || !strings.Contains(err.Error(), "file capability") {
			t.Errorf("shiftCaps(%x) = %v", bad, err)
		}
	}
}
