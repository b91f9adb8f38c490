package events

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/berthd/berth/machined/api"
)

func TestEventLogTornLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "events.jsonl")
	l := Open(p)
	l.Emit(api.Event{Kind: api.EvMachineStarted, Machine: "a", Message: "one"})
	l.Emit(api.Event{Kind: api.EvMachineStopped, Machine: "b", Message: "two"})
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq": 3, "kind": "mach`) // a crash in the middle of a write
	f.Close()
	l2 := Open(p)
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
