package host

import (
	"github.com/berthd/berth/container"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/spec"
)

// healthConfig gives the supervisor the machine's readiness and health check.
// The supervisor kills an unhealthy machine itself (restart.onUnhealthy), so
// the kill does not wait for berthd, and the restart policy sees its exit.
func healthConfig(c *container.Config, m *spec.Machine) {
	if m.Readiness.Type == spec.ReadinessNotify {
		c.Readiness, c.ReadyTimeout = container.ReadinessNotify, m.Readiness.Timeout.D()
	}
	if h := m.HealthCheck; h != nil {
		c.HealthCheck = &container.HealthCheck{Command: h.Command, Interval: h.Interval.D(), Timeout: h.Timeout.D(),
			Retries: h.Retries, StartPeriod: h.StartPeriod.D(), KillUnhealthy: m.Restart.OnUnhealthy}
	}
}

// apiHealth is the supervisor's record of the health check, for the API.
func apiHealth(h *container.Health) *api.Health {
	if h == nil {
		return nil
	}
	return &api.Health{Status: h.Status, FailingStreak: h.FailingStreak, Checks: h.Checks, LastCheck: h.LastCheck,
		LastDuration: h.LastDuration, LastExitCode: h.LastExitCode, LastOutput: h.LastOutput, LastError: h.LastError}
}

// Live reads what berthd follows of a running machine besides its exit
// (machined's watcher polls it): false when it does not run.
func (h *Host) Live(name string) (api.Live, bool) {
	st, err := container.ReadState(h.runDir(name))
	if err != nil || st.Phase == container.PhaseExited || !st.SupervisorAlive() {
		return api.Live{}, false
	}
	return api.Live{Phase: st.Phase, Health: apiHealth(st.Health), NotifyStatus: st.Status}, true
}
