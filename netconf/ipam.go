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

	"golang.org/x/sys/unix"
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

// Allocate returns machine's address on network, in subnet: the static address
// when one is given (claiming it), otherwise the address the machine already
// holds there, otherwise the lowest free one. The subnet's network address, its
// IPv4 broadcast address, the gateway, the addresses in reserved (other
// machines' static addresses, which a machine that has not started yet has not
// claimed) and every address leased to another machine are never handed out. A
// static address leased to another machine is an error naming that machine.
// Call it once per address family of the network.
func (l *Leases) Allocate(network string, subnet netip.Prefix, gateway netip.Addr, machine string, static netip.Addr, reserved ...netip.Addr) (netip.Prefix, error) {
	what := fmt.Sprintf("network %q: machine %q", network, machine)
	if network == "" || machine == "" {
		return netip.Prefix{}, fmt.Errorf("allocate: network and machine names are required: %w", ErrInvalid)
	}
	if err := checkSubnet(subnet); err != nil {
		return netip.Prefix{}, fmt.Errorf("%s: subnet %s: %w", what, subnet, err)
	}
	subnet = subnet.Masked()
	if gateway.IsValid() && !subnet.Contains(gateway) {
		return netip.Prefix{}, fmt.Errorf("%s: gateway %s is outside subnet %s: %w", what, gateway, subnet, ErrInvalid)
	}
	v4 := subnet.Addr().Is4()
	special := func(a netip.Addr) string {
		switch {
		case a == subnet.Addr():
			return "the subnet's network address"
		case v4 && a == lastAddr(subnet):
			return "the subnet's broadcast address"
		case a == gateway:
			return "the gateway"
		}
		return ""
	}
	if static.IsValid() {
		if !subnet.Contains(static) {
			return netip.Prefix{}, fmt.Errorf("%s: static address %s is outside subnet %s: %w", what, static, subnet, ErrInvalid)
		}
		if s := special(static); s != "" {
			return netip.Prefix{}, fmt.Errorf("%s: static address %s is %s: %w", what, static, s, ErrInvalid)
		}
	}

	var got netip.Prefix
	err := l.update(func(leases []Lease) ([]Lease, error) {
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
			return !taken && special(a) == "" && !slices.Contains(reserved, a)
		}
		var addr netip.Addr
		switch {
		case static.IsValid():
			if holder, taken := used[static]; taken {
				return nil, fmt.Errorf("%s: static address %s is leased to machine %q; give one of them another address, or remove %q to free it: %w",
					what, static, holder, holder, ErrExists)
			}
			addr = static
		case mine >= 0 && subnet.Contains(leases[mine].Addr.Addr()) && free(leases[mine].Addr.Addr()):
			addr = leases[mine].Addr.Addr()
		default:
			for a := subnet.Addr().Next(); subnet.Contains(a); a = a.Next() {
				if free(a) {
					addr = a
					break
				}
			}
			if !addr.IsValid() {
				return nil, fmt.Errorf("%s: no free address left in %s (%d leased); give the network a larger subnet: %w",
					what, subnet, len(used), ErrExhausted)
			}
		}
		got = netip.PrefixFrom(addr, subnet.Bits())
		lease := Lease{Network: network, Machine: machine, Addr: got, Static: static.IsValid()}
		if mine >= 0 {
			leases[mine] = lease
		} else {
			leases = append(leases, lease)
		}
		return leases, nil
	})
	return got, err
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
	unlock, err := l.lock(unix.LOCK_SH)
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
	unlock, err := l.lock(unix.LOCK_EX)
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

// lock takes a flock on the lock file. Each call opens the file anew: flock
// locks belong to an open file description, so this also excludes goroutines
// of this process from each other.
func (l *Leases) lock(how int) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(l.dir, leasesLockFile), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lease store: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lease store: lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil // closing drops the lock
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
	return writeFileAtomic(l.dir, leasesFile, append(b, '\n'), 0o644)
}

func writeFileAtomic(dir, name string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
