package netconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berthd/berth/internal/fsutil"
)

// Leases is the store of automatic (and claimed static) machine addresses, one
// JSON file in STATE/network/. Every change happens under an exclusive flock of
// a lock file beside it, reads the file afresh and replaces it atomically, so
// goroutines and processes (berthd, a one-shot `berth`) can allocate at the
// same time without ever handing out one address twice, and a crash leaves
// either the old or the new file, never half of one.
type Leases struct {
	dir string
}

// Lease is one machine's address on one network.
type Lease struct {
	Network string       `json:"network"`
	Machine string       `json:"machine"`
	Addr    netip.Prefix `json:"addr"`             // the address with the subnet's length
	Static  bool         `json:"static,omitempty"` // claimed by the definition, not allocated
}

const (
	leasesFile     = "leases.json"
	leasesLockFile = ".leases.lock"
	leasesVersion  = 1
)

type leasesDoc struct {
	Version int     `json:"version"`
	Leases  []Lease `json:"leases"`
}

// OpenLeases returns the lease store in dir (normally STATE/network), creating
// the directory when it is missing.
func OpenLeases(dir string) (*Leases, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lease store: %w", err)
	}
	return &Leases{dir: dir}, nil
}

// AddrRequest is one address a machine needs on a network: one per subnet
// (family) of the network.
type AddrRequest struct {
	Subnet  netip.Prefix
	Gateway netip.Addr // never handed out; zero: none
	Static  netip.Addr // claim this address; zero: allocate one
}

// Allocate returns machine's address on network, in subnet: the static address
// when one is given (claiming it), otherwise the address the machine already
// holds there, otherwise the lowest free one. The subnet's network address, its
// IPv4 broadcast address, the gateway, the addresses in reserved (other
// machines' static addresses, which a machine that has not started yet has not
// claimed) and every address leased to another machine are never handed out. A
// static address leased to another machine is an error naming that machine.
func (l *Leases) Allocate(network string, subnet netip.Prefix, gateway netip.Addr, machine string, static netip.Addr, reserved ...netip.Addr) (netip.Prefix, error) {
	got, err := l.AllocateAll(network, machine, []AddrRequest{{Subnet: subnet, Gateway: gateway, Static: static}}, reserved...)
	if err != nil {
		return netip.Prefix{}, err
	}
	return got[0], nil
}

// AllocateAll does what Allocate does for each request (typically the
// network's IPv4 and IPv6 subnets) in one update of the store: the machine
// gets all its addresses or none, for the price of one locked write.
func (l *Leases) AllocateAll(network, machine string, reqs []AddrRequest, reserved ...netip.Addr) ([]netip.Prefix, error) {
	what := fmt.Sprintf("network %q: machine %q", network, machine)
	if network == "" || machine == "" {
		return nil, fmt.Errorf("allocate: network and machine names are required: %w", ErrInvalid)
	}
	reqs = slices.Clone(reqs)
	fams := map[bool]bool{}
	for i, r := range reqs {
		if err := checkSubnet(r.Subnet); err != nil {
			return nil, fmt.Errorf("%s: subnet %s: %w", what, r.Subnet, err)
		}
		r.Subnet = r.Subnet.Masked()
		reqs[i] = r
		if fams[r.Subnet.Addr().Is4()] {
			return nil, fmt.Errorf("%s: two subnets of one IP version; a machine has one address per version: %w", what, ErrInvalid)
		}
		fams[r.Subnet.Addr().Is4()] = true
		if r.Gateway.IsValid() && !r.Subnet.Contains(r.Gateway) {
			return nil, fmt.Errorf("%s: gateway %s is outside subnet %s: %w", what, r.Gateway, r.Subnet, ErrInvalid)
		}
		if r.Static.IsValid() {
			if !r.Subnet.Contains(r.Static) {
				return nil, fmt.Errorf("%s: static address %s is outside subnet %s: %w", what, r.Static, r.Subnet, ErrInvalid)
			}
			if s := r.special(r.Static); s != "" {
				return nil, fmt.Errorf("%s: static address %s is %s: %w", what, r.Static, s, ErrInvalid)
			}
		}
	}
	var got []netip.Prefix
	err := l.update(func(leases []Lease) ([]Lease, error) {
		got = got[:0]
		for _, r := range reqs {
			var p netip.Prefix
			var err error
			if leases, p, err = allocOne(leases, what, network, machine, r, reserved); err != nil {
				return nil, err
			}
			got = append(got, p)
		}
		return leases, nil
	})
	return got, err
}

// special names why a is never handed out on r's subnet, or returns "".
func (r AddrRequest) special(a netip.Addr) string {
	switch {
	case a == r.Subnet.Addr():
		return "the subnet's network address"
	case r.Subnet.Addr().Is4() && a == lastAddr(r.Subnet):
		return "the subnet's broadcast address"
	case a == r.Gateway:
		return "the gateway"
	}
	return ""
}

// allocOne finds machine's address for r among leases and records it.
func allocOne(leases []Lease, what, network, machine string, r AddrRequest, reserved []netip.Addr) ([]Lease, netip.Prefix, error) {
	v4 := r.Subnet.Addr().Is4()
	used := map[netip.Addr]string{}
	mine := -1
	for i, ls := range leases {
		if ls.Network != network || ls.Addr.Addr().Is4() != v4 {
			continue
		}
		if ls.Machine == machine {
			mine = i
		} else {
			used[ls.Addr.Addr()] = ls.Machine
		}
	}
	free := func(a netip.Addr) bool {
		_, taken := used[a]
		return !taken && r.special(a) == "" && !slices.Contains(reserved, a)
	}
	var addr netip.Addr
	switch {
	case r.Static.IsValid():
		if holder, taken := used[r.Static]; taken {
			return nil, netip.Prefix{}, fmt.Errorf("%s: static address %s is leased to machine %q; give one of them another address, or remove %q to free it: %w",
				what, r.Static, holder, holder, ErrExists)
		}
		addr = r.Static
	case mine >= 0 && r.Subnet.Contains(leases[mine].Addr.Addr()) && free(leases[mine].Addr.Addr()):
		addr = leases[mine].Addr.Addr()
	default:
		for a := r.Subnet.Addr().Next(); r.Subnet.Contains(a); a = a.Next() {
			if free(a) {
				addr = a
				break
			}
		}
		if !addr.IsValid() {
			return nil, netip.Prefix{}, fmt.Errorf("%s: no free address left in %s (%d leased); give the network a larger subnet: %w",
				what, r.Subnet, len(used), ErrExhausted)
		}
	}
	got := netip.PrefixFrom(addr, r.Subnet.Bits())
	lease := Lease{Network: network, Machine: machine, Addr: got, Static: r.Static.IsValid()}
	if mine >= 0 {
		leases[mine] = lease
	} else {
		leases = append(leases, lease)
	}
	return leases, got, nil
}

func checkSubnet(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("no subnet: %w", ErrInvalid)
	}
	if p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return fmt.Errorf("want a plain IPv4 or IPv6 subnet: %w", ErrInvalid)
	}
	// At least two usable addresses: one gateway, one machine.
	if max := p.Addr().BitLen() - 2; p.Bits() > max {
		return fmt.Errorf("too small for a gateway and a machine; use a prefix length of at most %d: %w", max, ErrInvalid)
	}
	return nil
}

// Release frees every address machine holds on network. Releasing what is not
// leased is success.
func (l *Leases) Release(network, machine string) error {
	return l.update(func(leases []Lease) ([]Lease, error) {
		return slices.DeleteFunc(leases, func(ls Lease) bool { return ls.Network == network && ls.Machine == machine }), nil
	})
}

// ReleaseNetwork frees every address on network, for when the network is removed.
func (l *Leases) ReleaseNetwork(network string) error {
	return l.update(func(leases []Lease) ([]Lease, error) {
		return slices.DeleteFunc(leases, func(ls Lease) bool { return ls.Network == network }), nil
	})
}

// Leases returns every lease, sorted by network, machine and address.
func (l *Leases) Leases() ([]Lease, error) {
	unlock, err := l.lock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	leases, err := l.load()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(leases, func(a, b Lease) int {
		if c := strings.Compare(a.Network, b.Network); c != 0 {
			return c
		}
		if c := strings.Compare(a.Machine, b.Machine); c != 0 {
			return c
		}
		return a.Addr.Addr().Compare(b.Addr.Addr())
	})
	return leases, nil
}

// update runs fn on the current leases under the exclusive lock and writes
// its result when it differs.
func (l *Leases) update(fn func([]Lease) ([]Lease, error)) error {
	unlock, err := l.lock(true)
	if err != nil {
		return err
	}
	defer unlock()
	leases, err := l.load()
	if err != nil {
		return err
	}
	before := slices.Clone(leases)
	leases, err = fn(leases)
	if err != nil {
		return err
	}
	if slices.Equal(before, leases) {
		return nil
	}
	return l.store(leases)
}

// lock takes the flock on the lock file (shared to read, exclusive to change),
// which also excludes goroutines of this process from each other (see
// fsutil.Lock).
func (l *Leases) lock(exclusive bool) (unlock func(), err error) {
	unlock, err = fsutil.Lock(filepath.Join(l.dir, leasesLockFile), exclusive)
	if err != nil {
		return nil, fmt.Errorf("lease store: %w", err)
	}
	return unlock, nil
}

// load reads the leases. A missing file is an empty store; an unreadable one is
// set aside (kept for a person to look at) and the store starts empty: the
// daemon then reclaims running machines' addresses as it re-attaches them.
func (l *Leases) load() ([]Lease, error) {
	p := filepath.Join(l.dir, leasesFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lease store: %w", err)
	}
	var doc leasesDoc
	if err := json.Unmarshal(b, &doc); err != nil || doc.Version != leasesVersion {
		if err == nil {
			err = fmt.Errorf("unknown version %d", doc.Version)
		}
		aside := fmt.Sprintf("%s.corrupt-%s", p, time.Now().UTC().Format("20060102T150405"))
		if rerr := os.Rename(p, aside); rerr != nil {
			return nil, fmt.Errorf("lease store: %s is unreadable (%v) and cannot be set aside: %w", p, err, rerr)
		}
		slog.Warn("lease store unreadable; set aside, starting empty", "path", p, "aside", aside, "err", err)
		return nil, nil
	}
	return doc.Leases, nil
}

// store replaces the lease file atomically: a temporary file in the same
// directory, synced, renamed over the old one, and the directory synced so the
// rename itself survives a power cut.
func (l *Leases) store(leases []Lease) error {
	if leases == nil {
		leases = []Lease{}
	}
	b, err := json.MarshalIndent(leasesDoc{Version: leasesVersion, Leases: leases}, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(l.dir, leasesFile), append(b, '\n'), 0o644)
}
