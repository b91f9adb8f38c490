package machined

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
	s, err := OpenStore(dir)
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
	s2, _ := OpenStore(dir)
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

func TestEventLogTornLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "events.jsonl")
	l := NewEventLog(p)
	l.Emit(api.Event{Kind: api.EvMachineStarted, Machine: "a", Message: "one"})
	l.Emit(api.Event{Kind: api.EvMachineStopped, Machine: "b", Message: "two"})
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq": 3, "kind": "mach`) // a crash in the middle of a write
	f.Close()
	l2 := NewEventLog(p)
	if got := l2.Recent(0, "", 0); len(got) != 2 || got[1].Message != "two" {
		t.Fatalf("reloaded events = %+v", got)
	}
	if e := l2.Emit(api.Event{Kind: api.EvMachineStarted, Message: "three"}); e.Seq != 3 {
		t.Fatalf("sequence after reload = %d, want 3", e.Seq)
	}
	if got := l2.Recent(0, "a", 0); len(got) != 1 {
		t.Fatalf("per-machine events = %+v", got)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]int{"TERM": 15, "sigkill": 9, "SIGUSR1": 10, "9": 9, "RTMIN+3": 37, "SIGRTMIN+4": 38} {
		got, err := parseSignal(in)
		if err != nil || int(got) != want {
			t.Errorf("parseSignal(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "NOPE", "0", "65", "RTMIN+40"} {
		if _, err := parseSignal(bad); err == nil {
			t.Errorf("parseSignal(%q) accepted", bad)
		}
	}
}
