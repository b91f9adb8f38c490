package machined

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// gate admits the actions of a reconcile pass (and of a batch berth start)
// as many at once as the host can take: up to floor always (a slow host still
// moves), beyond that, up to max, only while the CPU is not saturated — the
// share of the last moments in which some task waited for a CPU (PSI's
// "some" line of /proc/pressure/cpu, Linux 4.20, measured over the gate's
// own short window rather than the kernel's 10 s average, which lags a burst
// of starts by seconds). Without PSI it admits up to max.
//
// This is what a host boot with 50 machines needs (systemd #6232: started
// all at once, half of nspawn's time out): berthd launches while there is
// CPU to spare and waits, briefly, while there is not, instead of a fixed 4.
type gate struct {
	max, floor int
	// busy says whether the CPU is saturated now; nil: never.
	busy func() bool
	poll time.Duration

	mu       sync.Mutex
	inflight int
	freed    chan struct{} // closed and replaced at each release
}

// pressureLimit is the share of time with a task waiting for a CPU above
// which no start beyond the floor is admitted.
const pressureLimit = 0.6

func newGate(max int) *gate {
	floor := min(max, runtime.NumCPU())
	g := &gate{max: max, floor: floor, poll: 20 * time.Millisecond, freed: make(chan struct{})}
	if p := newCPUPressure("/proc/pressure/cpu"); p != nil {
		g.busy = func() bool { return p.share() > pressureLimit }
	}
	return g
}

// acquire waits for a place; it fails only when ctx ends.
func (g *gate) acquire(ctx context.Context) error {
	for {
		g.mu.Lock()
		ok := g.inflight < g.floor || (g.inflight < g.max && (g.busy == nil || !g.busy()))
		if ok {
			g.inflight++
			g.mu.Unlock()
			return nil
		}
		freed := g.freed
		g.mu.Unlock()
		// A release frees a place at once; pressure easing is seen at the
		// next poll.
		t := time.NewTimer(g.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-freed:
		case <-t.C:
		}
		t.Stop()
	}
}

func (g *gate) release() {
	g.mu.Lock()
	g.inflight--
	close(g.freed)
	g.freed = make(chan struct{})
	g.mu.Unlock()
}

// cpuPressure reads the cumulative stall time of /proc/pressure/cpu and turns
// it into the share of wall time stalled since the previous reading at least
// window ago.
type cpuPressure struct {
	path   string
	window time.Duration

	mu        sync.Mutex
	at        time.Time
	total     uint64 // µs
	lastShare float64
}

// newCPUPressure is nil where the kernel has no PSI (or it is off: psi=0).
func newCPUPressure(path string) *cpuPressure {
	p := &cpuPressure{path: path, window: 100 * time.Millisecond}
	total, ok := p.read()
	if !ok {
		return nil
	}
	p.at, p.total = time.Now(), total
	return p
}

// share is the stalled share of the last window (between 0 and 1); readings
// closer together than window keep the previous figure.
func (p *cpuPressure) share() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.at) < p.window {
		return p.lastShare
	}
	total, ok := p.read()
	if !ok {
		return 0
	}
	p.lastShare = min(1, float64(total-p.total)/float64(now.Sub(p.at).Microseconds()))
	p.at, p.total = now, total
	return p.lastShare
}

// read is the "some" line's total= (microseconds some task waited for a CPU).
func (p *cpuPressure) read() (uint64, bool) {
	f, err := os.Open(p.path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	return parsePressureTotal(bufio.NewScanner(f))
}

func parsePressureTotal(s *bufio.Scanner) (uint64, bool) {
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 0 || fields[0] != "some" {
			continue
		}
		for _, f := range fields[1:] {
			if v, ok := strings.CutPrefix(f, "total="); ok {
				n, err := strconv.ParseUint(v, 10, 64)
				return n, err == nil
			}
		}
	}
	return 0, false
}
