package container

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// HealthCheck is a command the supervisor runs inside a running machine every
// Interval, as Docker's HEALTHCHECK and Quadlet's HealthCmd= do: exit 0 is a
// pass; anything else, or no exit within Timeout, is a failure. Retries
// failures in a row make the machine unhealthy; failures within StartPeriod
// of the start do not count.
type HealthCheck struct {
	Command     []string      `json:"command"`
	Interval    time.Duration `json:"interval"`
	Timeout     time.Duration `json:"timeout"`
	Retries     int           `json:"retries"`
	StartPeriod time.Duration `json:"startPeriod,omitempty"`
	// KillUnhealthy kills the payload once it is unhealthy; its exit has
	// reason ReasonUnhealthy, for the restart policy.
	KillUnhealthy bool `json:"killUnhealthy,omitempty"`
}

// Health states in state.json.
const (
	HealthStarting  = "starting"  // no check has passed yet and fewer than Retries failed
	HealthHealthy   = "healthy"   // the last check passed
	HealthUnhealthy = "unhealthy" // Retries checks in a row failed
)

// Health is the last health check's outcome, in state.json.
type Health struct {
	Status string `json:"status"`
	// FailingStreak counts the failures in a row (those in the start period
	// included, though they do not make it unhealthy).
	FailingStreak int       `json:"failingStreak"`
	Checks        int       `json:"checks"`
	LastCheck     time.Time `json:"lastCheck,omitzero"`
	LastDuration  string    `json:"lastDuration,omitempty"`
	LastExitCode  int       `json:"lastExitCode"`
	// LastOutput is the end of the last check's output (stdout and stderr),
	// cleaned: it comes from the guest.
	LastOutput string `json:"lastOutput,omitempty"`
	LastError  string `json:"lastError,omitempty"`
}

// maxHealthOutput is how much of a check's output state.json keeps (its
// end, where the reason usually is).
const maxHealthOutput = 512

// nextHealth is h after one check that passed (ok) or failed, a pure
// function: inStart says the machine is still in its start period.
func nextHealth(h Health, hc HealthCheck, ok, inStart bool) Health {
	h.Checks++
	switch {
	case ok:
		h.Status, h.FailingStreak = HealthHealthy, 0
	default:
		h.FailingStreak++
		if !inStart && h.FailingStreak >= max(hc.Retries, 1) {
			h.Status = HealthUnhealthy
		} else if h.Status == "" {
			h.Status = HealthStarting
		}
	}
	return h
}

// cleanGuestText makes text a guest wrote safe to show on a terminal and in
// JSON: valid UTF-8, no control characters but newline and tab, spaces
// trimmed, at most limit bytes (its end).
func cleanGuestText(b []byte, limit int) string {
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		switch {
		case r == utf8.RuneError && n <= 1:
			sb.WriteRune('\uFFFD')
		case r == '\n' || r == '\t':
			sb.WriteRune(r)
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r):
			sb.WriteRune('\uFFFD')
		default:
			sb.WriteRune(r)
		}
	}
	s := strings.TrimSpace(sb.String())
	if len(s) > limit {
		s = s[len(s)-limit:]
		for len(s) > 0 && !utf8.RuneStart(s[0]) {
			s = s[1:]
		}
		s = "…" + s
	}
	return s
}
