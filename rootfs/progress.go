package rootfs

import (
	"context"
	"sync"
	"time"
)

// Progress is one report of long work: a download, an extraction, debootstrap, a
// copy, hashing the tree.
type Progress struct {
	// Phase names the step: "download", "extract", "copy", "debootstrap",
	// "digest", "commit".
	Phase string `json:"phase"`
	// Done and Total count bytes; Total is 0 when it is not known.
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
	// Message is a line of the step's own output (debootstrap's "Unpacking
	// systemd..."), or empty.
	Message string `json:"message,omitempty"`
}

// ProgressFunc receives progress reports. It is called from the working
// goroutine, at most a few times a second per phase plus once at each phase's
// start and end, and must not block for long.
type ProgressFunc func(Progress)

type progressKey struct{}

// WithProgress returns a context that makes the store's long operations (root
// creation, clone, export; import unless its options name another function)
// report to fn.
func WithProgress(ctx context.Context, fn ProgressFunc) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

func progressFrom(ctx context.Context) ProgressFunc {
	fn, _ := ctx.Value(progressKey{}).(ProgressFunc)
	return fn
}

// reporter throttles reports of one operation.
type reporter struct {
	mu    sync.Mutex
	fn    ProgressFunc
	phase string
	total int64
	last  time.Time
}

func newReporter(fn ProgressFunc) *reporter { return &reporter{fn: fn} }

// start begins a phase (and reports it at once).
func (r *reporter) start(phase string, total int64) {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	r.phase, r.total, r.last = phase, total, time.Now()
	r.mu.Unlock()
	r.fn(Progress{Phase: phase, Total: total})
}

// update reports done bytes of the current phase, throttled to 10 a second.
func (r *reporter) update(done int64) {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	now := time.Now()
	if now.Sub(r.last) < 100*time.Millisecond {
		r.mu.Unlock()
		return
	}
	r.last = now
	p := Progress{Phase: r.phase, Done: done, Total: r.total}
	r.mu.Unlock()
	r.fn(p)
}

// message reports a line of output of the current phase.
func (r *reporter) message(msg string) {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	p := Progress{Phase: r.phase, Total: r.total, Message: msg}
	r.mu.Unlock()
	r.fn(p)
}

// finish reports the end of the current phase with its final count.
func (r *reporter) finish(done int64) {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	total := r.total
	if total == 0 {
		total = done
	}
	p := Progress{Phase: r.phase, Done: done, Total: total}
	r.mu.Unlock()
	r.fn(p)
}
