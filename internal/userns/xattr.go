package userns

import (
	"encoding/binary"
	"fmt"
)

// The extended attributes that hold user and group IDs besides a file's
// owner, which a shift must rewrite.
const (
	// xattrACLAccess and xattrACLDefault are POSIX ACLs (acl(5)) in the
	// kernel's xattr form: a le32 version (2), then entries of a le16 tag,
	// a le16 permission set and a le32 ID, which only the named-user and
	// named-group tags use.
	xattrACLAccess  = "system.posix_acl_access"
	xattrACLDefault = "system.posix_acl_default"
	// xattrCaps is a file's capabilities (capabilities(7), vfs_cap_data in
	// linux/capability.h): a le32 magic_etc whose top byte is the revision
	// and whose bit 0 is the effective flag, then le32 permitted and
	// inheritable words: one pair in revision 1, two in revisions 2 and 3;
	// revision 3 adds the le32 root ID, the host UID that is root for these
	// capabilities (revisions 1 and 2 mean the initial namespace's root, 0).
	xattrCaps = "security.capability"
)

const (
	aclVersion    = 2
	aclUser       = 0x02 // ACL_USER: a named user
	aclGroup      = 0x08 // ACL_GROUP: a named group
	aclHeaderSize = 4
	aclEntrySize  = 8

	capRevisionMask = 0xff000000
	capRevision1    = 0x01000000
	capRevision2    = 0x02000000
	capRevision3    = 0x03000000
	capFlagsMask    = 0x00ffffff
	capSize1        = 12
	capSize2        = 20
	capSize3        = 24
)

// shiftACL returns the POSIX ACL xattr value b with the IDs of its named
// users and groups mapped by id, and whether any changed (b itself is never
// modified).
func shiftACL(b []byte, id func(uint32) uint32) ([]byte, bool, error) {
	if len(b) < aclHeaderSize || (len(b)-aclHeaderSize)%aclEntrySize != 0 || binary.LittleEndian.Uint32(b) != aclVersion {
		return nil, false, fmt.Errorf("not a version %d POSIX ACL of %d-byte entries (%d bytes)", aclVersion, aclEntrySize, len(b))
	}
	out := append([]byte(nil), b...)
	changed := false
	for off := aclHeaderSize; off < len(out); off += aclEntrySize {
		tag := binary.LittleEndian.Uint16(out[off:])
		if tag != aclUser && tag != aclGroup {
			continue
		}
		old := binary.LittleEndian.Uint32(out[off+4:])
		if n := id(old); n != old {
			binary.LittleEndian.PutUint32(out[off+4:], n)
			changed = true
		}
	}
	return out, changed, nil
}

// shiftCaps returns the security.capability value b of a file whose owners
// moved: its root ID mapped by id. A result whose root ID is 0 is revision 2,
// as the kernel itself stores capabilities for the initial namespace's root;
// any other is revision 3, whose capabilities the kernel grants only in a
// user namespace whose root is that ID (so they give nothing on the host).
// Revision 1 (32 capabilities) is widened to the same form.
func shiftCaps(b []byte, id func(uint32) uint32) ([]byte, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("a %d-byte file capability", len(b))
	}
	magic := binary.LittleEndian.Uint32(b)
	var words [4]uint32 // permitted, inheritable of the low and the high 32
	var rootID uint32
	switch rev := magic & capRevisionMask; {
	case rev == capRevision1 && len(b) == capSize1:
		words[0], words[1] = binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])
	case rev == capRevision2 && len(b) == capSize2, rev == capRevision3 && len(b) == capSize3:
		for i := range words {
			words[i] = binary.LittleEndian.Uint32(b[4+4*i:])
		}
		if rev == capRevision3 {
			rootID = binary.LittleEndian.Uint32(b[capSize2:])
		}
	default:
		return nil, fmt.Errorf("a file capability of revision %#x in %d bytes", rev>>24, len(b))
	}
	rootID = id(rootID)
	rev, size := uint32(capRevision3), capSize3
	if rootID == 0 {
		rev, size = capRevision2, capSize2
	}
	out := make([]byte, size)
	binary.LittleEndian.PutUint32(out, rev|magic&capFlagsMask)
	for i, w := range words {
		binary.LittleEndian.PutUint32(out[4+4*i:], w)
	}
	if size == capSize3 {
		binary.LittleEndian.PutUint32(out[capSize2:], rootID)
	}
	return out, nil
}
