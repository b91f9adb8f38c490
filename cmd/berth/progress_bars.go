package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// barWidth is the width of the bar itself; the step's name and its figures
// take the rest of the line, cut with … when the terminal is narrower.
const barWidth = 30

// barView shows progress on a terminal: a bar for each step, the ones done
// staying above the one in progress, as docker and podman pull show layers.
// mpb draws and redraws them (at most every 150 ms) from a goroutine of its
// own; what each line says is the step's (phaseBar.figures).
type barView struct {
	w    io.Writer
	opts []mpb.ContainerOption
	p    *mpb.Progress // made at the first report: no output without one
	bars []*phaseBar
}

// phaseBar is one step's bar. mpb's goroutine reads it while progress's
// reports change it, hence the lock.
type phaseBar struct {
	bar  *mpb.Bar
	name string

	mu    sync.Mutex
	total int64
	start time.Time
	end   time.Time // when it completed: its figures stop moving
	msg   string    // the step's last message, shown in place of figures
}

func newBarView(w io.Writer, opts ...mpb.ContainerOption) *barView {
	return &barView{w: w, opts: opts}
}

// bar returns the bar of phase, made when phase is new; the step before
// ends then (the store works through its steps one at a time).
func (v *barView) bar(phase string, total int64, now time.Time) *phaseBar {
	if n := len(v.bars); n > 0 && v.bars[n-1].name == phase {
		return v.bars[n-1]
	}
	if n := len(v.bars); n > 0 {
		v.bars[n-1].finish(true, now)
	}
	if v.p == nil {
		v.p = mpb.New(append([]mpb.ContainerOption{mpb.WithOutput(v.w), mpb.WithWidth(barWidth)}, v.opts...)...)
	}
	b := &phaseBar{name: phase, total: total, start: now}
	opts := []mpb.BarOption{
		mpb.PrependDecorators(decor.Name(phase, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(decor.Any(b.figures)),
	}
	if total > 0 {
		b.bar = v.p.New(total, mpb.BarStyle(), opts...)
	} else {
		b.bar = v.p.New(0, mpb.SpinnerStyle().PositionLeft(), append(opts, mpb.BarFillerClearOnComplete())...) // how much is unknown: a spinner
	}
	v.bars = append(v.bars, b)
	return b
}

func (v *barView) update(phase string, done, total int64, now time.Time) {
	b := v.bar(phase, total, now)
	b.mu.Lock()
	grown := total > 0 && total != b.total
	if grown {
		b.total = total
	}
	b.mu.Unlock()
	if grown {
		b.bar.SetTotal(total, false)
	}
	b.bar.SetCurrent(done)
	if total > 0 && done >= total {
		b.finish(true, now)
	}
}

func (v *barView) message(phase, msg string, now time.Time) {
	b := v.bar(phase, 0, now)
	b.mu.Lock()
	b.msg = msg
	b.mu.Unlock()
}

// end completes the bars still open (or, after a failure, stops them where
// they are) and waits for mpb's last drawing, so that the terminal is the
// caller's again.
func (v *barView) end(ok bool, now time.Time) {
	if v.p == nil {
		return
	}
	for _, b := range v.bars {
		b.finish(ok, now)
	}
	v.p.Wait()
	v.p, v.bars = nil, nil
}

// finish completes the bar at what it counted (a total can be an estimate,
// as a tree's disk usage is of its bytes), or aborts it where it is.
func (b *phaseBar) finish(ok bool, now time.Time) {
	b.mu.Lock()
	if b.end.IsZero() {
		b.end = now
	}
	b.mu.Unlock()
	if ok {
		b.bar.SetTotal(-1, true)
	} else {
		b.bar.Abort(false)
	}
}

// figures is the text after the bar: the step's message if it has one, else
// "61%  12 MiB / 20 MiB  8.1 MiB/s  ETA 1s" (done: "20 MiB in 2.5s  8.0
// MiB/s"; no total: "12 MiB  8.1 MiB/s").
func (b *phaseBar) figures(s decor.Statistics) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.msg != "" {
		return b.msg
	}
	el := time.Since(b.start)
	if !b.end.IsZero() {
		el = b.end.Sub(b.start)
	}
	done := s.Current
	var parts []string
	switch {
	case (s.Completed || s.Aborted) && done == 0:
		parts = append(parts, "in "+took(el))
	case s.Completed || s.Aborted:
		parts = append(parts, fmt.Sprintf("%s in %s", humanBytes(done), took(el)))
	case b.total <= 0 && done == 0:
		parts = append(parts, took(el))
	case b.total > 0:
		parts = append(parts, fmt.Sprintf("%3d%%", percent(done, b.total)), humanBytes(done)+" / "+humanBytes(b.total))
	default:
		parts = append(parts, humanBytes(done))
	}
	if r := rate(done, el); r != "" {
		parts = append(parts, r)
	}
	if left := eta(done, b.total, el); left != "" && !s.Completed && !s.Aborted {
		parts = append(parts, "ETA "+left)
	}
	if s.Aborted {
		parts = append(parts, "stopped")
	}
	return strings.Join(parts, "  ")
}
