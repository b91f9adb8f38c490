// Package events is berthd's event log: recent events in memory, appended to
// a JSON-lines file that survives restarts, fanned out to subscribers
// (`berth events -f`).
package events

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/machined/api"
)

// Log keeps recent events in memory for `berth events` and the per-machine
// history of `berth status`, appends them to a file in the state directory, and
// fans them out to subscribers.
type Log struct {
	mu   sync.Mutex
	seq  uint64
	ring []api.Event
	max  int
	path string
	subs map[chan api.Event]struct{}
}

// eventFileMax is the size at which the event log is rotated to NAME.1.
const eventFileMax = 4 << 20

// Open opens the log kept at path (JSON lines), loading its tail so the
// history survives a daemon restart. path may be empty for a memory-only log.
func Open(path string) *Log {
	l := &Log{max: 2000, path: path, subs: map[chan api.Event]struct{}{}}
	if path == "" {
		return l
	}
	f, err := os.Open(path)
	if err != nil {
		return l
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e api.Event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue // a torn last line after a crash is skipped, not fatal
		}
		l.push(e)
		if e.Seq > l.seq {
			l.seq = e.Seq
		}
	}
	return l
}

func (l *Log) push(e api.Event) {
	l.ring = append(l.ring, e)
	if len(l.ring) > l.max {
		l.ring = append(l.ring[:0:0], l.ring[len(l.ring)-l.max:]...)
	}
}

// Emit records e, stamping its sequence number and time.
func (l *Log) Emit(e api.Event) api.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	e.Seq = l.seq
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	l.push(e)
	l.appendFile(e)
	for ch := range l.subs {
		select {
		case ch <- e:
		default: // a slow subscriber misses events rather than blocking the daemon
		}
	}
	return e
}

func (l *Log) appendFile(e api.Event) {
	if l.path == "" {
		return
	}
	_ = os.MkdirAll(filepath.Dir(l.path), 0o700)
	f, err := fsutil.OpenRotating(l.path, eventFileMax, 0o600)
	if err != nil {
		return
	}
	b, _ := json.Marshal(e)
	_, _ = f.Write(append(b, '\n'))
	f.Close()
}

// Recent returns the events after seq whose machine is machine (any when empty),
// oldest first, at most n (all when n <= 0).
func (l *Log) Recent(seq uint64, machine string, n int) []api.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []api.Event
	for _, e := range l.ring {
		if e.Seq <= seq || (machine != "" && e.Machine != machine) {
			continue
		}
		out = append(out, e)
	}
	if n > 0 && len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// Subscribe returns a channel of new events and a function that ends the
// subscription.
func (l *Log) Subscribe() (<-chan api.Event, func()) {
	ch := make(chan api.Event, 256)
	l.mu.Lock()
	l.subs[ch] = struct{}{}
	l.mu.Unlock()
	return ch, func() {
		l.mu.Lock()
		if _, ok := l.subs[ch]; ok {
			delete(l.subs, ch)
			close(ch)
		}
		l.mu.Unlock()
	}
}
