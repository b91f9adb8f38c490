package machined

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/berthd/berth/internal/fsutil"
)

// Hold reasons. A held machine is not started by the reconciler although its
// definition says running, until `berth start`/`berth release` or a change of its
// definition releases it. This is how an imperative verb is not undone by the next
// reconcile, and how a machine that powered itself off stays off.
const (
	HoldStopped = "stopped" // berth stop / poweroff / terminate, or a stock tool stopped it
	HoldExited  = "exited"  // the machine ended and its restart policy says not to restart
	HoldFailed  = "failed"  // restarted too often; given up
)

// Hold records why a declared machine is not being started.
type Hold struct {
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
	Since   time.Time `json:"since"`
	// SpecHash is the definition's hash when the hold was set: a different
	// definition releases the hold.
	SpecHash string `json:"specHash,omitempty"`
}

// ExitInfo is how a machine last ended.
type ExitInfo struct {
	Code    int       `json:"code"`
	Reason  string    `json:"reason"`
	Time    time.Time `json:"time"`
	Started time.Time `json:"started,omitzero"` // when that run began
	// StoppedBy says who stopped it when not berth and not the guest itself.
	StoppedBy string `json:"stoppedBy,omitempty"`
}

// Who stopped a machine, when it was neither berth nor the guest.
const (
	StoppedBySystemd      = "systemd"       // systemctl stop of its scope, machinectl terminate
	StoppedByHostShutdown = "host-shutdown" // the host is shutting down
)

// Record is what berthd remembers about one machine between reconciles and
// across its own restarts. Everything else is observed afresh each pass.
type Record struct {
	Name        string    `json:"name"`
	Hold        *Hold     `json:"hold,omitempty"`
	LastExit    *ExitInfo `json:"lastExit,omitempty"`
	Restarts    int       `json:"restarts,omitempty"`    // consecutive automatic restarts
	NextRestart time.Time `json:"nextRestart,omitempty"` // back-off: not before this time
	LastError   string    `json:"lastError,omitempty"`   // last failure to start or update
}

// Store keeps the records in STATE/berthd/machines.json, written atomically. A
// missing or corrupt file is not fatal: berthd starts with empty records and
// rebuilds the rest from observation.
type Store struct {
	mu      sync.Mutex
	path    string
	lock    string
	records map[string]*Record
}

// OpenStore loads the records under dir (STATE/berthd).
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state store: %w", err)
	}
	s := &Store{path: filepath.Join(dir, "machines.json"), lock: filepath.Join(dir, "machines.lock"), records: map[string]*Record{}}
	s.load()
	return s, nil
}

func (s *Store) load() {
	data, err := os.ReadFile(s.path)
	if err != nil {
		return
	}
	var recs []*Record
	if err := json.Unmarshal(data, &recs); err != nil {
		slog.Warn("state store is corrupt; starting afresh, observed state is rebuilt", "path", s.path, "err", err)
		_ = os.Rename(s.path, s.path+".corrupt")
		return
	}
	s.records = map[string]*Record{}
	for _, r := range recs {
		if r != nil && r.Name != "" {
			s.records[r.Name] = r
		}
	}
}

// Update changes the record of name under a lock that also excludes other
// processes (the CLI working without the daemon), re-reading the file first so
// neither loses the other's change, and writes it back.
func (s *Store) Update(name string, fn func(r *Record)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.flock()
	if err != nil {
		return err
	}
	defer unlock()
	s.load()
	r := s.records[name]
	if r == nil {
		r = &Record{Name: name}
		s.records[name] = r
	}
	fn(r)
	if r.Hold == nil && r.LastExit == nil && r.Restarts == 0 && r.LastError == "" && r.NextRestart.IsZero() {
		delete(s.records, name)
	}
	return s.save()
}

// Get returns a copy of the record of name (a zero record when none).
func (s *Store) Get(name string) Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.records[name]; r != nil {
		c := *r
		return c
	}
	return Record{Name: name}
}

// Reload re-reads the file, picking up changes another process made.
func (s *Store) Reload() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.load()
}

// Names returns the names that have a record.
func (s *Store) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ns []string
	for n := range s.records {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

func (s *Store) save() error {
	var recs []*Record
	for _, r := range s.records {
		recs = append(recs, r)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Name < recs[j].Name })
	data, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(s.path, append(data, '\n'), 0o600)
}

func (s *Store) flock() (func(), error) {
	unlock, err := fsutil.Lock(s.lock, true)
	if err != nil {
		return nil, fmt.Errorf("state store lock: %w", err)
	}
	return unlock, nil
}
