package machined

import (
	"testing"

	"github.com/berthd/berth/machined/api"
)

// TestLiveEvents: the events of a running machine's changes of phase and
// health, and none when nothing changed.
func TestLiveEvents(t *testing.T) {
	healthy := &api.Health{Status: api.HealthHealthy, Checks: 2}
	sick := &api.Health{Status: api.HealthUnhealthy, Checks: 5, FailingStreak: 3, LastExitCode: 2, LastOutput: "disk on fire", LastDuration: "5ms"}
	starting := &api.Health{Status: api.HealthStarting}
	for _, tc := range []struct {
		name      string
		prev, cur api.Live
		want      []string // kind: message
	}{
		{"nothing", api.Live{Phase: "running", Health: healthy}, api.Live{Phase: "running", Health: healthy}, nil},
		{"ready", api.Live{Phase: "booting"}, api.Live{Phase: "running", NotifyStatus: "serving"},
			[]string{"machine.running: web is ready: serving"}},
		{"starting is no event", api.Live{Phase: "running"}, api.Live{Phase: "running", Health: starting}, nil},
		{"healthy", api.Live{Phase: "running", Health: starting}, api.Live{Phase: "running", Health: healthy},
			[]string{"machine.health: web is healthy"}},
		{"unhealthy", api.Live{Phase: "running", Health: healthy}, api.Live{Phase: "running", Health: sick},
			[]string{"machine.health: web is unhealthy (last check: exit code 2: disk on fire (took 5ms), 3 failed in a row)"}},
		{"healthy again", api.Live{Phase: "running", Health: sick}, api.Live{Phase: "running", Health: healthy},
			[]string{"machine.health: web is healthy (last check: exit code 0)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, ev := range liveEvents("web", tc.prev, tc.cur) {
				if ev.Machine != "web" {
					t.Errorf("machine %q", ev.Machine)
				}
				got = append(got, ev.Kind+": "+ev.Message)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("event %q, want %q", got[i], tc.want[i])
				}
			}
		})
	}
}
