package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/machined/api"
)

// TestHealthShown: berth list's state carries an unhealthy or starting
// health check, berth status shows the last check and the STATUS=.
func TestHealthShown(t *testing.T) {
	sick := &api.Health{Status: api.HealthUnhealthy, Checks: 4, FailingStreak: 3, LastExitCode: 2,
		LastOutput: "disk on fire", LastDuration: "4ms", LastCheck: time.Now()}
	for _, tc := range []struct {
		s    api.MachineStatus
		want string
	}{
		{api.MachineStatus{State: api.StateRunning}, "running"},
		{api.MachineStatus{State: api.StateRunning, Health: &api.Health{Status: api.HealthHealthy}}, "running"},
		{api.MachineStatus{State: api.StateRunning, Health: sick}, "running (unhealthy)"},
		{api.MachineStatus{State: api.StateBooting, Health: &api.Health{Status: api.HealthStarting}}, "booting (health starting)"},
		{api.MachineStatus{State: api.StateStopped, Health: sick}, "stopped"},
	} {
		if got := machineRow(tc.s)[1]; got != tc.want {
			t.Errorf("state %q, want %q", got, tc.want)
		}
	}
	var b bytes.Buffer
	printStatus(&b, &api.MachineStatus{Name: "web", State: api.StateRunning, Health: sick, NotifyStatus: "serving 3 clients"})
	for _, want := range []string{"Status: serving 3 clients", "Health: unhealthy, last check ", "exit code 2: disk on fire (took 4ms), 3 failed in a row"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("berth status lacks %q:\n%s", want, b.String())
		}
	}
}
