package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/berthd/berth/rootfs"
)

// progress shows long work to a person: on a terminal one line redrawn in
// place with a bar ("extract [#######-----]  58%  146 MiB/250 MiB  92 MiB/s"),
// elsewhere (logs, CI, pipes) plain lines at each step's start, every 10% and
// at its end. It writes to stderr so that stdout stays for results and JSON.
// Any verb can use it: Update for counted work, Message for a step's own
// output lines, Done before printing anything else.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	width int

	phase     string
	start     time.Time
	lastDraw  time.Time
	lastTenth int64
	drawn     bool // a redrawable line is on screen
}

// newProgress returns a progress writer for w (the command's stderr): a bar
// when w is a terminal.
func newProgress(w io.Writer) *progress {
	p := &progress{w: w, width: 80}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		p.tty = true
		if w, _, err := term.GetSize(fd); err == nil && w > 20 {
			p.width = w
		}
	}
	return p
}

// Update reports done of total units of phase (total 0: unknown), in bytes.
func (p *progress) Update(phase string, done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	newPhase := phase != p.phase
	if newPhase {
		p.endLine()
		p.phase, p.start, p.lastTenth = phase, now, -1
	}
	if p.tty {
		if !newPhase && now.Sub(p.lastDraw) < 100*time.Millisecond && done != total {
			return
		}
		p.lastDraw = now
		p.draw(p.barLine(done, total, now))
		return
	}
	// Plain lines: the start, each tenth, the end.
	tenth := int64(-1)
	if total > 0 {
		tenth = done * 10 / total
	}
	if newPhase || (total > 0 && tenth > p.lastTenth) {
		p.lastTenth = tenth
		fmt.Fprintln(p.w, p.plainLine(done, total, now))
	}
}

// Message shows a line of a step's own output (debootstrap's "Unpacking
// systemd..."): replacing the bar's line on a terminal, as a line otherwise.
func (p *progress) Message(phase, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if phase != p.phase {
		p.endLine()
		p.phase, p.start, p.lastTenth = phase, time.Now(), -1
	}
	line := phase + ": " + msg
	if p.tty {
		p.draw(line)
		return
	}
	fmt.Fprintln(p.w, line)
}

// Done ends the redrawn line, if any, so that other output starts on its own.
func (p *progress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLine()
	p.phase = ""
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

func (p *progress) draw(line string) {
	if r := []rune(line); len(r) > p.width-1 {
		line = string(r[:p.width-1])
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s", line)
	p.drawn = true
}

func (p *progress) endLine() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func (p *progress) barLine(done, total int64, now time.Time) string {
	rate := ""
	if el := now.Sub(p.start).Seconds(); el > 0.5 && done > 0 {
		rate = "  " + humanBytes(int64(float64(done)/el)) + "/s"
	}
	if total <= 0 {
		return fmt.Sprintf("%-11s %s%s", p.phase, humanBytes(done), rate)
	}
	pct := min(done*100/total, 100)
	barw := max(10, min(40, p.width-55))
	fill := int(int64(barw) * min(done, total) / total)
	return fmt.Sprintf("%-11s [%s%s] %3d%%  %s/%s%s", p.phase, strings.Repeat("#", fill), strings.Repeat("-", barw-fill),
		pct, humanBytes(done), humanBytes(total), rate)
}

func (p *progress) plainLine(done, total int64, now time.Time) string {
	el := now.Sub(p.start).Round(100 * time.Millisecond)
	if total <= 0 {
		if done == 0 {
			return p.phase + ": started"
		}
		return fmt.Sprintf("%s: %s (%s)", p.phase, humanBytes(done), el)
	}
	return fmt.Sprintf("%s: %d%% (%s of %s, %s)", p.phase, min(done*100/total, 100), humanBytes(done), humanBytes(total), el)
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
