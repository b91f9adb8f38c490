package plan

import (
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/store"
	"github.com/berthd/berth/spec"
)

// TestAfterExit: the restart policy, for every policy and kind of exit.
func TestAfterExit(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	machine := func(policy spec.RestartPolicy, maxRetries int) *spec.Machine {
		m := &spec.Machine{Name: "web", Image: "deb", Restart: spec.Restart{Policy: policy, MaxRetries: maxRetries}}
		m.Default()
		return m
	}
	crash := api.ExitInfo{Code: 137, Reason: "crashed", Time: now, Started: now.Add(-5 * time.Second)}
	clean := api.ExitInfo{Code: 0, Reason: "poweroff", Time: now, Started: now.Add(-time.Hour)}
	for _, tc := range []struct {
		name     string
		mm       *spec.Machine
		rec      store.Record
		ex       api.ExitInfo
		event    string
		restart  bool
		hold     string
		restarts int
		delay    time.Duration
	}{
		{"on-failure, a crash: restart after 1 s", machine(spec.RestartOnFailure, 0), store.Record{}, crash, api.EvMachineRestarting, true, "", 1, time.Second},
		{"on-failure, the third crash in a row: 4 s", machine(spec.RestartOnFailure, 0), store.Record{Restarts: 2}, crash, api.EvMachineRestarting, true, "", 3, 4 * time.Second},
		{"on-failure, a long good run resets the count", machine(spec.RestartOnFailure, 0), store.Record{Restarts: 5}, api.ExitInfo{Code: 1, Reason: "exited", Time: now, Started: now.Add(-time.Hour)}, api.EvMachineRestarting, true, "", 1, time.Second},
		{"on-failure, a clean poweroff: held exited", machine(spec.RestartOnFailure, 0), store.Record{}, clean, api.EvMachineExited, false, api.HoldExited, 0, 0},
		{"always, a clean poweroff: restart", machine(spec.RestartAlways, 0), store.Record{}, clean, api.EvMachineRestarting, true, "", 1, time.Second},
		{"no, a crash: held exited", machine(spec.RestartNo, 0), store.Record{}, crash, api.EvMachineExited, false, api.HoldExited, 0, 0},
		{"maxRetries reached: failed", machine(spec.RestartOnFailure, 3), store.Record{Restarts: 3}, crash, api.EvMachineFailed, false, api.HoldFailed, 3, 0},
		{"stopped through systemd: held stopped", machine(spec.RestartAlways, 0), store.Record{}, api.ExitInfo{Code: 0, Reason: "poweroff", StoppedBy: api.StoppedBySystemd}, api.EvMachineHeld, false, api.HoldStopped, 0, 0},
		{"the host shutting down: nothing to restart, no hold", machine(spec.RestartAlways, 0), store.Record{Restarts: 2}, api.ExitInfo{Code: 0, StoppedBy: api.StoppedByHostShutdown}, api.EvMachineStopped, false, "", 0, 0},
		{"undeclared: nothing to restart", nil, store.Record{}, crash, api.EvMachineStopped, false, "", 0, 0},
		{"held already: stays held", machine(spec.RestartAlways, 0), store.Record{Hold: &api.Hold{Reason: api.HoldStopped}}, crash, api.EvMachineStopped, false, api.HoldStopped, 0, 0},
	} {
		out := AfterExit("web", tc.mm, tc.rec, tc.ex, now)
		hold := ""
		if out.Record.Hold != nil {
			hold = out.Record.Hold.Reason
		}
		var delay time.Duration
		if !out.Record.NextRestart.IsZero() {
			delay = out.Record.NextRestart.Sub(now)
		}
		if out.Event != tc.event || out.Restart != tc.restart || hold != tc.hold || out.Record.Restarts != tc.restarts || delay != tc.delay {
			t.Errorf("%s: %s restart %v hold %q restarts %d delay %s; want %s %v %q %d %s",
				tc.name, out.Event, out.Restart, hold, out.Record.Restarts, delay, tc.event, tc.restart, tc.hold, tc.restarts, tc.delay)
		}
		if out.Record.LastExit == nil || out.Record.LastExit.Reason != tc.ex.Reason || !strings.Contains(out.Message, "web") {
			t.Errorf("%s: the exit is not recorded or told: %+v %q", tc.name, out.Record.LastExit, out.Message)
		}
	}
}
