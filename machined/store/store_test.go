package store

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berthd/berth/machined/api"
)

func TestStoreSurvivesCorruption(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "machines.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("a corrupt state file must not be fatal: %v", err)
	}
	if n := s.Names(); len(n) != 0 {
		t.Fatalf("records from a corrupt file: %v", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "machines.json.corrupt")); err != nil {
		t.Fatalf("the corrupt file is not kept aside: %v", err)
	}
	if err := s.Update("web", func(r *Record) { r.Hold = &api.Hold{Reason: api.HoldStopped, Since: time.Now()} }); err != nil {
		t.Fatal(err)
	}
	s2, _ := Open(dir)
	if r := s2.Get("web"); r.Hold == nil || r.Hold.Reason != api.HoldStopped {
		t.Fatalf("record not persisted: %+v", r)
	}
	// An empty record is not kept.
	if err := s2.Update("web", func(r *Record) { r.Hold = nil }); err != nil {
		t.Fatal(err)
	}
	if n := s2.Names(); len(n) != 0 {
		t.Fatalf("empty record kept: %v", n)
	}
}
