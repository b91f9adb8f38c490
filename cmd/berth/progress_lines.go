package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// lineEvery is how often at most lineView writes a line of a step in
// progress: enough to show that a pull of a large layer moves, few enough
// for a CI log.
const lineEvery = 5 * time.Second

// lineView shows progress as plain lines, for logs and pipes:
//
//	layer sha256:1f7a0c3e9b2d: started, 20 MiB
//	layer sha256:1f7a0c3e9b2d: 35% of 20 MiB, 7.9 MiB/s, 1.6s left
//	layer sha256:1f7a0c3e9b2d: 100% of 20 MiB in 2.5s, 8.0 MiB/s
//	layer sha256:5c0e11d3a4b8: started, 1.2 MiB
//	layer sha256:5c0e11d3a4b8: already stored
//
// A step's start and end get a line each (the end none when a message of
// the step said how it ended or it counted nothing), its messages one each,
// and between them a line of how far it got at most every lineEvery. A step
// ends when it reaches its total, the next one starts or the display ends.
type lineView struct {
	w     io.Writer
	every time.Duration

	phase     string
	start     time.Time
	lastLine  time.Time // of any step: the period is the whole display's
	ended     bool      // the step's end line is written
	lastMsg   bool      // the step's last line was one of its messages
	done, tot int64
	known     bool // the step said its total at its start
}

func newLineView(w io.Writer) *lineView { return &lineView{w: w, every: lineEvery} }

func (v *lineView) begin(phase string, total int64, now time.Time) {
	v.finish(now)
	v.phase, v.start, v.ended, v.lastMsg, v.done, v.tot, v.known = phase, now, false, false, 0, total, total > 0
	line := phase + ": started"
	if total > 0 {
		line += ", " + humanBytes(total)
	}
	v.line(line, now)
}

// finish writes the end line of the step, unless it has one, a message said
// how it ended, or it counted nothing.
func (v *lineView) finish(now time.Time) {
	if v.phase == "" || v.ended {
		return
	}
	v.ended = true
	if !v.lastMsg && v.done > 0 {
		v.line(v.endLine(now), now)
	}
}

func (v *lineView) update(phase string, done, total int64, now time.Time) {
	if phase != v.phase {
		v.begin(phase, total, now)
	}
	if v.ended {
		return
	}
	v.done, v.tot = done, total
	switch {
	case total > 0 && done >= total:
		v.finish(now)
	case done > 0 && now.Sub(v.lastLine) >= v.every:
		v.line(v.progressLine(now), now)
	}
}

func (v *lineView) message(phase, msg string, now time.Time) {
	if phase != v.phase {
		v.begin(phase, 0, now)
	}
	v.line(phase+": "+msg, now)
	v.lastMsg = true
}

// end writes the end line of the step in progress: as done, or where it
// stopped.
func (v *lineView) end(ok bool, now time.Time) {
	if !ok && v.phase != "" && !v.ended {
		v.ended = true
		line := v.phase + ": stopped"
		if v.done > 0 && v.known {
			line += fmt.Sprintf(" at %d%% of %s", percent(v.done, v.tot), humanBytes(v.tot))
		} else if v.done > 0 {
			line += " at " + humanBytes(v.done)
		}
		v.line(line, now)
	}
	v.finish(now)
	v.phase = ""
}

func (v *lineView) line(s string, now time.Time) {
	fmt.Fprintln(v.w, s)
	v.lastLine, v.lastMsg = now, false
}

// progressLine is "PHASE: 35% of 20 MiB, 7.9 MiB/s, 1.6s left" (or without
// a total "PHASE: 12 MiB, 7.9 MiB/s").
func (v *lineView) progressLine(now time.Time) string {
	el := now.Sub(v.start)
	parts := []string{humanBytes(v.done)}
	if v.known {
		parts[0] = fmt.Sprintf("%d%% of %s", percent(v.done, v.tot), humanBytes(v.tot))
	}
	if r := rate(v.done, el); r != "" {
		parts = append(parts, r)
	}
	if left := eta(v.done, v.tot, el); left != "" {
		parts = append(parts, left+" left")
	}
	return v.phase + ": " + strings.Join(parts, ", ")
}

// endLine is "PHASE: 100% of 20 MiB in 2.5s, 8.0 MiB/s", or "PHASE: 12 MiB
// in 1.5s, 8.0 MiB/s" for a step without a total or that ended short of it
// (the total was an estimate, as a tree's disk usage is of its bytes).
func (v *lineView) endLine(now time.Time) string {
	el := now.Sub(v.start)
	s := fmt.Sprintf("%s: %s in %s", v.phase, humanBytes(v.done), took(el))
	if v.known && v.done >= v.tot {
		s = fmt.Sprintf("%s: 100%% of %s in %s", v.phase, humanBytes(v.tot), took(el))
	}
	if r := rate(v.done, el); r != "" {
		s += ", " + r
	}
	return s
}
