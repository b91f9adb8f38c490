package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/vbauerster/mpb/v8"

	"github.com/berthd/berth/internal/testenv"
)

// pullEvents is what the store reports pulling a two-layer image whose
// first layer it has: times in ms from the start, as rootfs's reporter
// throttles them (at most 10 a second a step).
type progressEvent struct {
	ms          int
	phase, msg  string
	done, total int64
}

var pullEvents = []progressEvent{
	{ms: 0, phase: "layer sha256:1f7a0c3e9b2d", total: 3 << 20},
	{ms: 1, phase: "layer sha256:1f7a0c3e9b2d", msg: "already stored", total: 3 << 20},
	{ms: 2, phase: "layer sha256:1f7a0c3e9b2d", done: 3 << 20, total: 3 << 20},
	{ms: 3, phase: "layer sha256:5c0e11d3a4b8", total: 20 << 20},
	{ms: 1000, phase: "layer sha256:5c0e11d3a4b8", done: 4 << 20, total: 20 << 20},
	{ms: 4000, phase: "layer sha256:5c0e11d3a4b8", done: 8 << 20, total: 20 << 20},
	{ms: 6000, phase: "layer sha256:5c0e11d3a4b8", done: 12 << 20, total: 20 << 20},
	{ms: 6100, phase: "layer sha256:5c0e11d3a4b8", done: 13 << 20, total: 20 << 20},
	{ms: 10000, phase: "layer sha256:5c0e11d3a4b8", done: 20 << 20, total: 20 << 20},
	{ms: 10001, phase: "commit"},
	{ms: 10020, phase: "commit"},
}

func play(v progressView, evs []progressEvent, ok bool) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	last := 0
	for _, e := range evs {
		if e.msg != "" {
			v.message(e.phase, e.msg, at(e.ms))
		} else {
			v.update(e.phase, e.done, e.total, at(e.ms))
		}
		last = e.ms
	}
	v.end(ok, at(last+10))
}

// TestLineView: without a terminal, a line at each step's start and end, a
// message in place of the end, and in between at most a line every
// lineEvery — not one per report.
func TestLineView(t *testing.T) {
	var buf bytes.Buffer
	play(newLineView(&buf), pullEvents, true)
	testenv.Golden(t, "testdata/progress-lines.golden", buf.String())

	buf.Reset()
	play(newLineView(&buf), pullEvents[:7], false)
	if !strings.HasSuffix(buf.String(), "layer sha256:5c0e11d3a4b8: stopped at 60% of 20.0 MiB\n") {
		t.Errorf("a pull that failed in its second layer:\n%s", buf.String())
	}

	// A step whose total was an estimate ends with what it counted.
	buf.Reset()
	play(newLineView(&buf), []progressEvent{{phase: "export", total: 1000}, {ms: 50, phase: "export", done: 900, total: 1000}}, true)
	if want := "export: started, 1000 B\nexport: 900 B in 60ms\n"; buf.String() != want {
		t.Errorf("an export short of its estimate:\n%s\nwant\n%s", buf.String(), want)
	}
}

// TestBarView draws the bars into a buffer, as mpb draws them on a
// terminal: one line per layer, the message of the stored one, the figures
// of the pulled one.
func TestBarView(t *testing.T) {
	var buf bytes.Buffer
	v := newBarView(&buf, mpb.WithAutoRefresh(), mpb.WithRefreshRate(time.Millisecond), mpb.WithWidth(120))
	play(v, pullEvents, true)
	out := buf.String()
	for _, want := range []string{"layer sha256:1f7a0c3e9b2d", "already stored", "layer sha256:5c0e11d3a4b8", "20.0 MiB in 10s", "2.0 MiB/s", "commit"} {
		if !strings.Contains(out, want) {
			t.Errorf("the bars lack %q:\n%s", want, out)
		}
	}
	// A view that saw nothing writes nothing, and waits for nothing.
	buf.Reset()
	newBarView(&buf, mpb.WithAutoRefresh()).end(true, time.Now())
	if buf.Len() != 0 {
		t.Errorf("an unused view wrote %q", buf.String())
	}
}

func TestHumanFigures(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{humanBytes(512), "512 B"},
		{humanBytes(3 << 20), "3.0 MiB"},
		{humanBytes(250 << 20), "250 MiB"},
		{rate(10<<20, 2*time.Second), "5.0 MiB/s"},
		{rate(10<<20, 100*time.Millisecond), ""},
		{eta(5, 10, 2*time.Second), "2s"},
		{eta(1, 100, 2*time.Second), "3m18s"},
		{eta(10, 10, 2*time.Second), ""},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
