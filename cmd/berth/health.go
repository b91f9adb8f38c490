package main

import (
	"time"

	"github.com/berthd/berth/machined/api"
)

// healthNote is what berth list adds to a running machine's state about
// its health check: " (unhealthy)", " (health starting)", or nothing when it
// is healthy or has no check.
func healthNote(s api.MachineStatus) string {
	if s.Health == nil || s.State == api.StateStopped || s.State == api.StateFailed {
		return ""
	}
	switch s.Health.Status {
	case api.HealthUnhealthy:
		return " (unhealthy)"
	case api.HealthStarting:
		return " (health starting)"
	}
	return ""
}

// healthLine is berth status's Health row: the status and the last check.
func healthLine(h *api.Health) string {
	if h.Checks == 0 || h.LastCheck.IsZero() {
		return h.Status + ", no check yet"
	}
	return h.Status + ", last check " + h.LastCheck.Local().Format(time.TimeOnly) + " (" + ago(h.LastCheck) + "): " + h.Last()
}
