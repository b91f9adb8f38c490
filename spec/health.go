package spec

import (
	"fmt"
	"reflect"
	"time"

	"gopkg.in/yaml.v3"
)

// Readiness says when an application-mode machine counts as running.
type Readiness struct {
	Type    ReadinessType `json:"type,omitempty" enum:"none,notify" doc:"none (the default): running once the command is exec'd. notify: the command gets $NOTIFY_SOCKET (/run/host/notify) and the machine is booting until it sends READY=1, as a Type=notify service or Quadlet's Notify=true; its STATUS= shows in berth status."`
	Timeout Duration      `json:"timeout,omitempty" doc:"With notify: how long the command may take to send READY=1 before it is killed (exit reason \"not ready\", which the restart policy treats as a failure). Default 90s."`
}

// ReadinessType is a kind of readiness.
type ReadinessType string

const (
	ReadinessNone   ReadinessType = "none"
	ReadinessNotify ReadinessType = "notify"
)

// DefaultReadyTimeout is readiness.timeout's default, systemd's
// DefaultTimeoutStartSec=.
const DefaultReadyTimeout = Duration(90 * time.Second)

// HealthCheck is a command berth runs inside the running machine, over and
// over, as Docker's HEALTHCHECK and Quadlet's HealthCmd= do.
type HealthCheck struct {
	Command     []string `json:"command" required:"true" doc:"The program and its arguments, run inside the machine as its root (like berth shell NAME -- COMMAND); exit 0 is healthy. The program is looked up in the machine's PATH when it has no slash."`
	Interval    Duration `json:"interval,omitempty" doc:"Time between the end of one check and the start of the next; the first runs one interval after the start. Default 30s."`
	Timeout     Duration `json:"timeout,omitempty" doc:"A check that has not exited after this long is killed (with everything it started) and counts as failed. Default 30s."`
	Retries     int      `json:"retries,omitempty" doc:"Failures in a row that make the machine unhealthy. Default 3."`
	StartPeriod Duration `json:"startPeriod,omitempty" doc:"Failures within this time after the start do not count towards retries (a pass ends it early). Default 0."`
}

// Defaults of healthCheck.
const (
	DefaultHealthInterval = Duration(30 * time.Second)
	DefaultHealthTimeout  = Duration(30 * time.Second)
	DefaultHealthRetries  = 3
)

// defaultHealth fills in readiness and healthCheck.
func (m *Machine) defaultHealth() {
	// none stays unwritten: the defaulted form, and so the hash, of a
	// machine without readiness is what it was before the field existed.
	if m.Readiness.Type == ReadinessNone {
		m.Readiness.Type = ""
	}
	if m.Readiness.Type == ReadinessNotify && m.Readiness.Timeout == 0 {
		m.Readiness.Timeout = DefaultReadyTimeout
	}
	if h := m.HealthCheck; h != nil {
		if h.Interval == 0 {
			h.Interval = DefaultHealthInterval
		}
		if h.Timeout == 0 {
			h.Timeout = DefaultHealthTimeout
		}
		if h.Retries == 0 {
			h.Retries = DefaultHealthRetries
		}
	}
}

// validateHealth checks readiness, healthCheck and restart.onUnhealthy.
func validateHealth(d *doc, m *Machine) {
	if m.Readiness.Type == ReadinessNotify && len(m.Command) == 0 {
		d.errorf("readiness", "notify is for application mode (command): a booted systemd guest reports READY=1 itself; remove readiness")
	}
	if d.has("readiness.timeout") {
		switch {
		case m.Readiness.Type != ReadinessNotify:
			d.errorf("readiness.timeout", "is used only with readiness notify")
		case m.Readiness.Timeout <= 0:
			d.errorf("readiness.timeout", "must be greater than 0; remove it for the default (%s)", DefaultReadyTimeout)
		}
	}
	if h := m.HealthCheck; h != nil {
		switch {
		case len(h.Command) == 0:
			d.errorf("healthCheck.command", "missing: give the program and its arguments, for example [/bin/sh, -c, \"wget -q -O /dev/null http://localhost/\"]")
		case h.Command[0] == "":
			d.errorf("healthCheck.command[0]", "the program to run is empty")
		}
		for _, f := range []struct {
			name string
			v    Duration
		}{{"interval", h.Interval}, {"timeout", h.Timeout}, {"startPeriod", h.StartPeriod}} {
			if d.has("healthCheck."+f.name) && (f.v < 0 || (f.v == 0 && f.name != "startPeriod")) {
				d.errorf("healthCheck."+f.name, "must be greater than 0; remove it for the default")
			}
		}
		if h.Interval > 0 && h.Interval.D() < 100*time.Millisecond {
			d.errorf("healthCheck.interval", "%s is too short: at least 100ms", h.Interval)
		}
		if h.Retries < 0 {
			d.errorf("healthCheck.retries", "%d is negative: give the failures in a row that make the machine unhealthy (default %d)", h.Retries, DefaultHealthRetries)
		}
	}
	if m.Restart.OnUnhealthy {
		switch {
		case m.HealthCheck == nil:
			d.errorf("restart.onUnhealthy", "needs a healthCheck to tell when the machine is unhealthy")
		case m.Restart.Policy == RestartNo:
			d.errorf("restart.onUnhealthy", "with policy no the machine would be killed and left down: use policy on-failure or always")
		}
	}
}

// decodeReadiness reads the shorthand readiness: notify (customs).
func decodeReadiness(n *yaml.Node, v reflect.Value) error {
	switch t := ReadinessType(n.Value); t {
	case ReadinessNone, ReadinessNotify:
		v.Set(reflect.ValueOf(Readiness{Type: t}))
		return nil
	}
	return fmt.Errorf("%q is not a readiness: use none or notify", n.Value)
}

// readinessSchema is readiness's schema: the shorthand or the object
// (customSchemas).
func readinessSchema(g *schemaGen) map[string]any {
	return map[string]any{"anyOf": []any{
		map[string]any{"enum": []string{string(ReadinessNone), string(ReadinessNotify)}, "description": "Short for {type: STRING}."},
		g.ref(reflect.TypeFor[Readiness]()),
	}}
}
