package plan

import (
	"fmt"
	"time"

	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/store"
	"github.com/berthd/berth/spec"
)

// The restart policy as pure functions of a machine's definition, its record
// and how it ended: the watcher of a running machine and the planner (for
// exits that happened while berthd was down) both use them, and they are
// table-tested without root.

// minGoodRun is how long a machine must have run for its restart counter to
// start again from zero.
const minGoodRun = 30 * time.Second

// ExitOutcome is what an exit leads to: the record to keep, and the event
// that tells a person.
type ExitOutcome struct {
	Record  store.Record
	Event   string // an Ev* kind
	Message string
	// Restart says the machine starts again, not before Record.NextRestart.
	Restart bool
}

// AfterExit applies the restart policy to a machine that ended: mm is its
// definition (nil when no longer declared), rec its record before the exit.
func AfterExit(name string, mm *spec.Machine, rec store.Record, ex api.ExitInfo, now time.Time) ExitOutcome {
	msg := fmt.Sprintf("%s exited: %s", name, ex.Reason)
	rec.Name, rec.LastExit = name, &ex
	switch {
	case mm == nil || mm.State == spec.StateStopped || rec.Hold != nil || ex.StoppedBy == api.StoppedByHostShutdown:
		// Nothing to restart: undeclared, declared stopped, held, or the host is
		// going down (the machine comes back when it boots again).
		rec.Restarts, rec.NextRestart = 0, time.Time{}
		return ExitOutcome{Record: rec, Event: api.EvMachineStopped, Message: msg}
	case ex.StoppedBy == api.StoppedBySystemd:
		// systemd stopped its scope (systemctl stop, machinectl terminate, a
		// unit's Conflicts=): that is a person's stop, like berth stop, whatever
		// the policy. (machinectl poweroff asks the guest itself: an exit like
		// any other.)
		rec.Restarts, rec.NextRestart = 0, time.Time{}
		rec.Hold = &api.Hold{Reason: api.HoldStopped, Message: "stopped through systemd (systemctl stop, machinectl)", Since: now, SpecHash: mm.Hash()}
		return ExitOutcome{Record: rec, Event: api.EvMachineHeld, Message: msg + "; stopped through systemd, held until berth start"}
	}
	failed := ex.Code != 0
	if !(mm.Restart.Policy == spec.RestartAlways || (mm.Restart.Policy == spec.RestartOnFailure && failed)) {
		rec.Hold = &api.Hold{Reason: api.HoldExited, Message: ex.Reason, Since: now, SpecHash: mm.Hash()}
		rec.Restarts, rec.NextRestart = 0, time.Time{}
		return ExitOutcome{Record: rec, Event: api.EvMachineExited,
			Message: msg + fmt.Sprintf(" (restart policy %s: it stays down until berth start)", mm.Restart.Policy)}
	}
	if !ex.Started.IsZero() && ex.Time.Sub(ex.Started) >= minGoodRun {
		rec.Restarts = 0
	}
	if mm.Restart.MaxRetries > 0 && rec.Restarts >= mm.Restart.MaxRetries {
		rec.Hold = &api.Hold{Reason: api.HoldFailed, Since: now, SpecHash: mm.Hash(),
			Message: fmt.Sprintf("gave up after %d restarts; last exit: %s", rec.Restarts, ex.Reason)}
		rec.NextRestart = time.Time{}
		return ExitOutcome{Record: rec, Event: api.EvMachineFailed, Message: name + " failed: " + rec.Hold.Message}
	}
	delay := backoff(time.Duration(mm.Restart.Backoff), time.Duration(mm.Restart.MaxBackoff), rec.Restarts)
	rec.Restarts++
	rec.NextRestart = now.Add(delay)
	return ExitOutcome{Record: rec, Event: api.EvMachineRestarting, Restart: true,
		Message: fmt.Sprintf("%s; restart %d in %s", msg, rec.Restarts, delay.Round(time.Millisecond))}
}

// backoff is base·2^n, capped at maxDelay.
func backoff(base, maxDelay time.Duration, n int) time.Duration {
	if base <= 0 {
		base = time.Second
	}
	if maxDelay <= 0 {
		maxDelay = 5 * time.Minute
	}
	d := base
	for i := 0; i < n && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}
