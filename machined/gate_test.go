package machined

import (
	"bufio"
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthd/berth/machined/api"
)

// TestGate: up to the floor always, beyond it up to max only while the CPU
// is not saturated; a release lets the next one in at once.
func TestGate(t *testing.T) {
	var busy atomic.Bool
	g := &gate{max: 4, floor: 2, poll: time.Millisecond, freed: make(chan struct{}), busy: busy.Load}
	ctx := context.Background()
	busy.Store(true)
	for range 2 {
		if err := g.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if err := g.acquire(short); err == nil {
		t.Fatal("a third place was given while the CPU is saturated")
	}
	busy.Store(false)
	for range 2 {
		if err := g.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	short2, cancel2 := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel2()
	if err := g.acquire(short2); err == nil {
		t.Fatal("a fifth place was given beyond max 4")
	}
	got := make(chan error, 1)
	g.poll = time.Hour // only the release may wake it
	go func() { got <- g.acquire(ctx) }()
	time.Sleep(10 * time.Millisecond)
	g.release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a release did not admit the waiting one")
	}
}

func TestParsePressureTotal(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"some avg10=42.70 avg60=41.00 avg300=27.18 total=175287485\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", 175287485, true},
		{"full avg10=0.00 total=9\n", 0, false},
		{"some avg10=1.00 total=x\n", 0, false},
		{"", 0, false},
	} {
		got, ok := parsePressureTotal(bufio.NewScanner(strings.NewReader(c.in)))
		if got != c.want || ok != c.ok {
			t.Errorf("%q: %d %v, want %d %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// TestVerbsTogether: berth stop of many names stops them all at once (one
// stop's time, not three), each name's error its own; berth start of many
// starts them all.
func TestVerbsTogether(t *testing.T) {
	e := newFakeEnv(t, false)
	e.write(map[string]string{"d.yaml": fakeDefs, "a.yaml": fakeMachineDef("a", "good", ""),
		"b.yaml": fakeMachineDef("b", "good", ""), "c.yaml": fakeMachineDef("c", "good", "")})
	e.apply()
	e.host.stopDelay = 300 * time.Millisecond
	ctx := context.Background()
	t0 := time.Now()
	outs, err := e.m.Verbs(ctx, api.VerbRequest{Verb: "stop", Names: []string{"a", "ghost", "b", "c"}})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 800*time.Millisecond {
		t.Errorf("three stops of 300 ms took %s: not together", d)
	}
	if e.host.mostStopping != 3 {
		t.Errorf("at most %d stops in flight, want 3", e.host.mostStopping)
	}
	for _, o := range outs {
		if (o.Error != "") != (o.Machine == "ghost") {
			t.Errorf("%s: %q", o.Machine, o.Error)
		}
	}
	if !strings.Contains(outs[1].Error, `machine "ghost"`) || !strings.Contains(outs[1].Error, "not declared") {
		t.Errorf("ghost: %q", outs[1].Error)
	}
	for _, n := range []string{"a", "b", "c"} {
		if h := e.m.store.Get(n).Hold; h == nil {
			t.Errorf("%s is not held after berth stop", n)
		}
	}
	n := len(e.host.callsSince(0))
	outs, err = e.m.Verbs(ctx, api.VerbRequest{Verb: "start", Names: []string{"a", "b", "c"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range outs {
		if o.Error != "" {
			t.Errorf("start %s: %s", o.Machine, o.Error)
		}
	}
	if got := e.host.callsSince(n); len(got) != 3 {
		t.Errorf("start of three: %q", got)
	}
	if _, err := e.m.Verbs(ctx, api.VerbRequest{Verb: "start"}); err == nil {
		t.Error("a verb with no names was taken")
	}
	if outs, _ := e.m.Verbs(ctx, api.VerbRequest{Verb: "frobnicate", Names: []string{"a"}}); outs[0].Error == "" {
		t.Error("an unknown verb was taken")
	}
}

// TestStartRunningReturnsAtOnce: berth start of a machine berthd watches
// running is success at once (its exit watcher never ends: no waiting on it).
func TestStartRunningReturnsAtOnce(t *testing.T) {
	e := newFakeEnv(t, true)
	e.write(map[string]string{"d.yaml": fakeDefs, "a.yaml": fakeMachineDef("a", "good", "")})
	e.apply()
	t0 := time.Now()
	outs, err := e.m.Verbs(context.Background(), api.VerbRequest{Verb: "start", Names: []string{"a"}})
	if err != nil || outs[0].Error != "" {
		t.Fatalf("start of a running machine: %+v, %v", outs, err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("start of a running machine took %s", d)
	}
}
