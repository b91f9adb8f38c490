// Package userns gives each machine its range of 65536 UIDs and GIDs and
// keeps it: picked from the machine's name within systemd-nspawn's range for
// -U (so berth and nspawn pick alike), clear of every other machine's range
// and of the host's users (/etc/passwd, /etc/group, /etc/subuid, /etc/subgid),
// recorded under the state directory so a restart, a berthd restart and a host
// reboot keep it.
package userns

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/internal/fsutil"
)

// Size is the number of UIDs (and GIDs) of one machine's range.
const Size = 65536

// The range berth picks from, as systemd-nspawn's --private-users=pick
// (UID_SHIFT_PICK_MIN, UID_SHIFT_PICK_MAX): above the host's users and the
// ranges /etc/subuid usually hands out, below the 32-bit UIDs systemd
// reserves for itself.
const (
	PickMin uint32 = 0x00080000
	PickMax uint32 = 0x6FFF0000
)

// Range is a machine's UIDs and GIDs: container 0…Size-1 is host
// Base…Base+Size-1, the same for groups.
type Range struct {
	Base uint32 `json:"base"`
	// Pinned says the definition named Base (privateUsers: NUMBER); a picked
	// range is berth's choice.
	Pinned bool      `json:"pinned,omitempty"`
	Since  time.Time `json:"since"`
}

// End is the range's last UID.
func (r Range) End() uint32 { return r.Base + Size - 1 }

func (r Range) String() string { return fmt.Sprintf("%d-%d", r.Base, r.End()) }

// Store keeps the machines' ranges in STATE/userns/ranges.json, changed
// under a lock so that berthd and a one-shot berth agree.
type Store struct {
	dir string
	// Host lists what the host's own users occupy; nil reads /etc.
	Host func() ([]Span, error)
}

// Open returns the store under the state directory.
func Open(stateDir string) *Store {
	return &Store{dir: filepath.Join(stateDir, "userns")}
}

func (s *Store) path() string { return filepath.Join(s.dir, "ranges.json") }

// Get returns the machine's recorded range.
func (s *Store) Get(name string) (Range, bool, error) {
	all, err := s.load()
	if err != nil {
		return Range{}, false, err
	}
	r, ok := all[name]
	return r, ok, nil
}

// Assign returns the machine's range: the recorded one while it fits the
// definition, else a new one — pinned at base when pinned, otherwise picked.
// A pinned range that another machine holds, or that the host's users
// occupy, is an error naming them.
func (s *Store) Assign(name string, base uint32, pinned bool) (Range, error) {
	var out Range
	err := s.change(func(all map[string]Range) error {
		if r, ok := all[name]; ok && (!pinned && !r.Pinned || pinned && r.Base == base) {
			out = r
			return nil
		}
		host, err := s.hostSpans()
		if err != nil {
			return err
		}
		taken := takenBy(all, name)
		if pinned {
			if err := free(base, taken, host); err != nil {
				return fmt.Errorf("privateUsers: %d: %w", base, err)
			}
			out = Range{Base: base, Pinned: true, Since: time.Now().UTC()}
		} else {
			b, err := pick(name, taken, host, lockedByOther)
			if err != nil {
				return err
			}
			out = Range{Base: b, Since: time.Now().UTC()}
		}
		all[name] = out
		return nil
	})
	return out, err
}

// Release forgets the machine's range (its root is gone).
func (s *Store) Release(name string) error {
	return s.change(func(all map[string]Range) error {
		delete(all, name)
		return nil
	})
}

// All returns every recorded range by machine name.
func (s *Store) All() (map[string]Range, error) { return s.load() }

func (s *Store) load() (map[string]Range, error) {
	all := map[string]Range{}
	data, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return all, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &all); err != nil {
		// Losing the records would hand a machine's files to another one:
		// refuse rather than start afresh.
		return nil, fmt.Errorf("%s is corrupt (%v): repair or remove it; every machine's UID range is recorded there", s.path(), err)
	}
	return all, nil
}

func (s *Store) change(fn func(map[string]Range) error) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	unlock, err := fsutil.Lock(filepath.Join(s.dir, "ranges.lock"), true)
	if err != nil {
		return err
	}
	defer unlock()
	all, err := s.load()
	if err != nil {
		return err
	}
	before, err := json.Marshal(all)
	if err != nil {
		return err
	}
	if err := fn(all); err != nil {
		return err
	}
	if after, err := json.Marshal(all); err == nil && bytes.Equal(before, after) {
		// A machine's start finds its range recorded: no write, and no two
		// fsyncs on the way to its init.
		return nil
	}
	data, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(s.path(), append(data, '\n'), 0o600)
}

// owner is what occupies a span of IDs: a machine, or a host user.
type owner struct {
	Span
	machine string
}

func takenBy(all map[string]Range, except string) []owner {
	var out []owner
	for n, r := range all {
		if n != except {
			out = append(out, owner{Span{r.Base, r.End(), "machine " + n}, n})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].First < out[j].First })
	return out
}

// free checks that base's range is clear of every machine and host span.
func free(base uint32, taken []owner, host []Span) error {
	r := Span{First: base, Last: base + Size - 1}
	for _, t := range taken {
		if r.overlaps(t.Span) {
			return fmt.Errorf("the UIDs %s are machine %q's: %w", t.Span.ids(), t.machine, errdefs.ErrConflict)
		}
	}
	for _, h := range host {
		if r.overlaps(h) {
			return fmt.Errorf("the host's %s uses UIDs %s: %w", h.What, h.ids(), errdefs.ErrConflict)
		}
	}
	return nil
}

// pick chooses a free range for name: first the one systemd-nspawn -U
// would try for that name (nspawnCandidate), then the next free one after it,
// wrapping; a range is free when no machine has it recorded, none of the
// host's users and subordinate ranges overlap it, and no running nspawn (or
// other berth) holds its lock. nspawn tries random ranges after the first;
// berth's sequence is deterministic, so the same state picks the same range.
func pick(name string, taken []owner, host []Span, busy func(uint32) bool) (uint32, error) {
	slots := (PickMax - PickMin) / Size
	start := (nspawnCandidate(name) - PickMin) / Size
	for i := uint32(0); i < slots; i++ {
		base := PickMin + (start+i)%slots*Size
		if free(base, taken, host) == nil && !busy(base) {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no free UID range of 65536 left between %d and %d: %w", PickMin, PickMax, errdefs.ErrExhausted)
}

func (s *Store) hostSpans() ([]Span, error) {
	if s.Host != nil {
		return s.Host()
	}
	return HostSpans("/etc")
}
