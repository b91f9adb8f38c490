// Package store keeps what berthd remembers about each machine between
// reconciles and across its own restarts (holds, last exits, restart counts and
// back-off), in one JSON file written atomically under a lock.
package store

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
	"github.com/berthd/berth/machined/api"
)

// Record is what berthd remembers about one machine between reconciles and
// across its own restarts. Everything else is observed afresh each pass.
type Record struct {
	Name        string        `json:"name"`
	Hold        *api.Hold     `json:"hold,omitempty"`
	LastExit    *api.ExitInfo `json:"lastExit,omitempty"`
	Restarts    int           `json:"restarts,omitempty"`    // consecutive automatic restarts
	NextRestart time.Time     `json:"nextRestart,omitempty"` // back-off: not before this time
	LastError   string        `json:"lastError,omitempty"`   // last failure to start or update
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

// Open loads the records under dir (STATE/berthd).
func Open(dir string) (*Store, error) {
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
