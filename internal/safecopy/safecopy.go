// Package safecopy copies files between the host and a machine's root, the
// work of `berth copy-to` and `berth copy-from` (machinectl copy-to and
// copy-from, incus file push and pull).
//
// The machine's side is hostile: every path there is resolved inside its root
// (openat2 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), and below the top every
// entry is reached from its parent's descriptor with O_NOFOLLOW, so a symbolic
// link the guest planted, or swapped in meanwhile, never leads berth to a host
// file. Only regular files' contents are read, through the descriptor of the
// very inode that was checked; FIFOs, sockets and device nodes are skipped and
// named in the summary. Files land under a temporary name and are renamed into
// place once complete. The copy runs on a locked OS thread that keeps only the
// filesystem capabilities and, for a machine whose root is idmapped, acts with
// the machine's root as its filesystem user.
package safecopy

import (
	"fmt"
	"path"
	"strings"
)

// Size is how many IDs a machine with private users has (0…65535).
const Size = 65536

// Nobody is the ID an owner the other side cannot represent becomes.
const Nobody = 65534

// Guest is a machine's root as berth reaches it.
type Guest struct {
	// Name is the machine's, for messages.
	Name string
	// Root is a descriptor of the machine's "/" (O_PATH is enough): its
	// leader's root while it runs, a detached mount of its root while it is
	// stopped. The caller closes it.
	Root int
	// Offset is the host ID that the machine's ID 0 shows as through Root:
	// its range's base while it runs (idmapped or shifted) and for a
	// shifted root at rest; 0 for an unshifted root at rest and for a
	// machine with the host's users.
	Offset uint32
	// Private says the machine has a range of its own (privateUsers): IDs
	// 0…Size-1 are the machine's, others are nobody. Without it IDs are the
	// host's, one to one.
	Private bool
	// FSUser makes the copy act with Offset as its filesystem user and group:
	// a write through an idmapped mount by an ID the mount cannot map (host
	// root) fails with EOVERFLOW.
	FSUser bool
}

// Options change how a copy treats what is there already.
type Options struct {
	// Force replaces existing files (not directories) at the destination;
	// without it an existing file is an error. Directories always merge.
	Force bool
}

// Summary is what a copy did, for -o json.
type Summary struct {
	Machine     string `json:"machine"`
	Direction   string `json:"direction"` // "to" (host → machine) or "from"
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Files       int    `json:"files"`
	Dirs        int    `json:"dirs"`
	Symlinks    int    `json:"symlinks"`
	Hardlinks   int    `json:"hardlinks"`
	Bytes       int64  `json:"bytes"`
	// Nobody counts entries whose owner or group the other side has no ID
	// for: they became nobody (65534).
	Nobody int `json:"nobody,omitempty"`
	// SetIDCleared counts files copied from a machine that were set-user-ID
	// or set-group-ID: on the host they are not.
	SetIDCleared int    `json:"setidCleared,omitempty"`
	Skipped      []Skip `json:"skipped"`
}

// Skip is an entry a copy left out, and why.
type Skip struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// guestToHost maps an owner seen through the machine's root to the host ID
// copy-from gives it: the machine's own ID N is N on the host.
func (g *Guest) guestToHost(id uint32) (uint32, bool) {
	if !g.Private {
		return id, true
	}
	if id < g.Offset || id-g.Offset >= Size {
		return Nobody, false
	}
	return id - g.Offset, true
}

// hostToGuest maps a host owner to the ID copy-to stores through the
// machine's root: host ID U is the machine's U, as machinectl copy-to does;
// one above the machine's range is its nobody.
func (g *Guest) hostToGuest(id uint32) (uint32, bool) {
	if !g.Private {
		return id, true
	}
	ok := id < Size
	if !ok {
		id = Nobody
	}
	return g.Offset + id, ok
}

// GuestPath checks a path inside a machine: absolute, cleaned. The root
// itself is refused as a whole-tree source or destination name.
func GuestPath(machine, p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("machine %q: %q: a path inside the machine must be absolute", machine, p)
	}
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("machine %q: %q: a path must not contain NUL", machine, p)
	}
	return path.Clean(p), nil
}
