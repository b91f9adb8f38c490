package machined

import (
	"context"
	"fmt"
	"time"

	"github.com/berthd/berth/machined/api"
)

// liveReader is a Host that can say how a running machine is doing between
// its start and its exit (the real Host reads the supervisor's state.json).
type liveReader interface {
	Live(name string) (api.Live, bool)
}

// livePoll is how often berthd looks at a running machine's phase and
// health: a change shows as an event within it. The supervisor runs the
// checks and keeps their history itself; berthd only reports.
const livePoll = time.Second

// watchLive follows a running machine's phase and health until ctx ends (its
// exit watcher's context), emitting an event for each change: ready (booting
// to running), healthy, unhealthy. The first reading is the baseline, so a
// berthd that restarts does not tell again what it told before.
func (m *Manager) watchLive(ctx context.Context, name string) {
	lr, ok := m.host.(liveReader)
	if !ok {
		return
	}
	prev, ok := lr.Live(name)
	t := time.NewTicker(livePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, running := lr.Live(name)
		if !running {
			continue // the exit watcher handles it
		}
		if ok {
			for _, ev := range liveEvents(name, prev, cur) {
				m.events.Emit(ev)
			}
		}
		prev, ok = cur, true
	}
}

// liveEvents are the events of a running machine's change from prev to cur,
// a pure function.
func liveEvents(name string, prev, cur api.Live) []api.Event {
	var evs []api.Event
	if prev.Phase == "booting" && cur.Phase == "running" {
		msg := name + " is ready"
		if cur.NotifyStatus != "" {
			msg += ": " + cur.NotifyStatus
		}
		evs = append(evs, api.Event{Kind: api.EvMachineRunning, Machine: name, Message: msg})
	}
	was, is := "", ""
	if prev.Health != nil {
		was = prev.Health.Status
	}
	if cur.Health != nil {
		is = cur.Health.Status
	}
	if is != was && (is == api.HealthHealthy || is == api.HealthUnhealthy) {
		msg := fmt.Sprintf("%s is %s", name, is)
		if is == api.HealthUnhealthy || was == api.HealthUnhealthy {
			msg += " (last check: " + cur.Health.Last() + ")"
		}
		evs = append(evs, api.Event{Kind: api.EvMachineHealth, Machine: name, Message: msg})
	}
	return evs
}
