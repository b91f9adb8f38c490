package api

import (
	"fmt"
	"strings"
	"time"
)

// Health is a running machine's last health check (healthCheck), as its
// supervisor recorded it.
type Health struct {
	Status        string    `json:"status"` // starting, healthy or unhealthy
	FailingStreak int       `json:"failingStreak"`
	Checks        int       `json:"checks"`
	LastCheck     time.Time `json:"lastCheck,omitzero"`
	LastDuration  string    `json:"lastDuration,omitempty"`
	LastExitCode  int       `json:"lastExitCode"`
	LastOutput    string    `json:"lastOutput,omitempty"` // its end, cleaned: it comes from the guest
	LastError     string    `json:"lastError,omitempty"`
}

// Health statuses.
const (
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// Last says how the last check went, in one line.
func (h *Health) Last() string {
	if h.Checks == 0 {
		return "no check yet"
	}
	how := fmt.Sprintf("exit code %d", h.LastExitCode)
	if h.LastError != "" {
		how = h.LastError
	}
	if h.LastOutput != "" {
		out := h.LastOutput
		if i := strings.LastIndexByte(out, '\n'); i >= 0 {
			out = out[i+1:]
		}
		how += ": " + out
	}
	s := how
	if h.LastDuration != "" {
		s += " (took " + h.LastDuration + ")"
	}
	if h.FailingStreak > 0 {
		s += fmt.Sprintf(", %d failed in a row", h.FailingStreak)
	}
	return s
}

// Live is what berthd follows of a running machine besides its exit: its
// phase, health and sd_notify STATUS=.
type Live struct {
	Phase        string
	Health       *Health
	NotifyStatus string
}

// EvMachineHealth tells that a machine's health changed (healthy, unhealthy).
const EvMachineHealth = "machine.health"
