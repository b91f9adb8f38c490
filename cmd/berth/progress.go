package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/berthd/berth/rootfs"
)

// progress shows long work to a person. On a terminal each step (a layer of
// an image pulled, a copy, hashing the tree) gets a bar of its own, stacked
// and redrawn in place by mpb (progress_bars.go):
//
//	layer sha256:1f7a0c3e9b2d [=========>-----]  61%  12 MiB / 20 MiB  8.1 MiB/s  ETA 1s
//
// Elsewhere (logs, CI, pipes) it writes plain lines (progress_lines.go): one
// at each step's start and end, and between them one line at most every few
// seconds. It writes to stderr so that stdout stays for results and JSON.
// Any verb can use it: Update for counted work, Message for a step's own
// output lines, End before printing anything else.
type progress struct {
	mu   sync.Mutex
	view progressView
}

// progressView is how progress is shown: bars or lines. Its methods are
// called under progress's lock, with the time of the report.
type progressView interface {
	// update reports done of total bytes of phase (total 0: unknown).
	update(phase string, done, total int64, now time.Time)
	// message shows a line of phase's own output.
	message(phase, msg string, now time.Time)
	// end finishes the display: the steps left open end as done (ok) or
	// as stopped where they were.
	end(ok bool, now time.Time)
}

// newProgress returns a progress writer for w (the command's stderr): bars
// when w is a terminal.
func newProgress(w io.Writer) *progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return &progress{view: newBarView(w)}
	}
	return &progress{view: newLineView(w)}
}

// Update reports done of total units of phase (total 0: unknown), in bytes.
func (p *progress) Update(phase string, done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.view.update(phase, done, total, time.Now())
}

// Message shows a line of a step's own output (debootstrap's "Unpacking
// systemd...", a layer's "already stored").
func (p *progress) Message(phase, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.view.message(phase, msg, time.Now())
}

// End ends the display, so that other output starts on a line of its own:
// after a failure (err) the bars stay where they stopped.
func (p *progress) End(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.view.end(err == nil, time.Now())
}

// Rootfs adapts the progress to rootfs's reports.
func (p *progress) Rootfs() rootfs.ProgressFunc {
	return func(ev rootfs.Progress) {
		if ev.Message != "" {
			p.Message(ev.Phase, ev.Message)
			return
		}
		p.Update(ev.Phase, ev.Done, ev.Total)
	}
}

// rate renders the speed of done bytes in el ("8.1 MiB/s"), or "" while too
// little time passed to tell.
func rate(done int64, el time.Duration) string {
	if el < 500*time.Millisecond || done <= 0 {
		return ""
	}
	return humanBytes(int64(float64(done)/el.Seconds())) + "/s"
}

// eta renders the time left at the speed so far ("12s"), or "".
func eta(done, total int64, el time.Duration) string {
	if el < 500*time.Millisecond || done <= 0 || total <= done {
		return ""
	}
	left := time.Duration(float64(el) * float64(total-done) / float64(done))
	if left < 10*time.Second {
		return left.Round(100 * time.Millisecond).String()
	}
	return left.Round(time.Second).String()
}

// took renders how long a step took: 40ms, 2.5s, 1m12s.
func took(el time.Duration) string {
	if el < time.Second {
		return el.Round(time.Millisecond).String()
	}
	return el.Round(100 * time.Millisecond).String()
}

func percent(done, total int64) int64 {
	if total <= 0 {
		return 0
	}
	return min(done*100/total, 100)
}

// humanBytes renders a byte count for people: 512 B, 3.4 KiB, 250 MiB, 1.2 GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	suffix := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}[exp]
	if v >= 100 {
		return fmt.Sprintf("%.0f %s", v, suffix)
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}
