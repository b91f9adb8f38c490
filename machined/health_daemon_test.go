package machined_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/machined/api"
)

func init() {
	// test-notify runs inside a machine: a systemd-notify for busybox guests.
	container.RegisterStage("test-notify", testenv.SendNotify)
}

// appMachine is a busybox application machine with the test binary as
// /opt/probe.
func appMachine(t *testing.T, name, script, extra string) string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`apiVersion: berth/v1
kind: Machine
name: %s
image: bb
command: [/bin/sh, -c, %q]
mounts: [{source: %s, target: /opt/probe, readOnly: true}]
%s`, name, script, self, extra)
}

// TestHealthAndReadiness: through berthd, an application with readiness
// notify is booting until READY=1 (then running, with its STATUS= and an
// event); a failing health check makes a machine running (unhealthy) with
// an event, and with restart.onUnhealthy it is killed and restarted, its
// exit recorded as unhealthy.
func TestHealthAndReadiness(t *testing.T) {
	e := newEnv(t, "")
	ready, sick, killed := testenv.UniqueName("ready"), testenv.UniqueName("sick"), testenv.UniqueName("killed")
	e.write("images.yaml", testImages(t))
	e.write("ready.yaml", appMachine(t, ready,
		`while ! test -e /tmp/go; do sleep 0.1; done; _BERTH_STAGE=test-notify /opt/probe "STATUS=serving" READY=1; exec sleep 1000`,
		"readiness: {type: notify, timeout: 2m}\n"))
	e.write("sick.yaml", appMachine(t, sick, `exec sleep 1000`,
		"healthCheck: {command: [/bin/sh, -c, \"test ! -e /tmp/sick || { echo disk on fire; exit 2; }\"], interval: 200ms, timeout: 2s, retries: 2}\n"))
	e.write("killed.yaml", appMachine(t, killed, `exec sleep 1000`,
		"healthCheck: {command: [/bin/sh, -c, \"echo nope; exit 1\"], interval: 200ms, retries: 2}\n"+
			"restart: {policy: on-failure, backoff: 200ms, maxRetries: 1, onUnhealthy: true}\n"))
	seq := e.lastEvent()
	e.apply()

	e.run("readiness notify", func(t *testing.T) {
		s := e.waitState(ready, api.StateBooting, 30*time.Second)
		if !s.ReadySince.IsZero() {
			t.Errorf("ready before READY=1: %+v", s)
		}
		if _, code := e.exec(ready, "/bin/touch", "/tmp/go"); code != 0 {
			t.Fatal("touch /tmp/go failed")
		}
		s = e.waitState(ready, api.StateRunning, 30*time.Second)
		if s.NotifyStatus != "serving" || s.ReadySince.IsZero() {
			t.Errorf("after READY=1: status %q, ready since %v", s.NotifyStatus, s.ReadySince)
		}
		testenv.Eventually(t, 10*time.Second, func() error {
			return hasEvent(e.events(ready, seq), api.EvMachineRunning, "is ready: serving")
		})
	})
	e.run("unhealthy is reported", func(t *testing.T) {
		testenv.Eventually(t, 30*time.Second, func() error {
			if s := e.status(sick); s.Health == nil || s.Health.Status != api.HealthHealthy {
				return fmt.Errorf("health %+v", s.Health)
			}
			return nil
		})
		if _, code := e.exec(sick, "/bin/touch", "/tmp/sick"); code != 0 {
			t.Fatal("touch /tmp/sick failed")
		}
		testenv.Eventually(t, 30*time.Second, func() error {
			list, err := e.api.List(context.Background())
			if err != nil {
				return err
			}
			for _, s := range list {
				if s.Name == sick && (s.State != api.StateRunning || s.Health == nil || s.Health.Status != api.HealthUnhealthy) {
					return fmt.Errorf("list: %s %+v", s.State, s.Health)
				}
			}
			return hasEvent(e.events(sick, seq), api.EvMachineHealth, "is unhealthy (last check: exit code 2: disk on fire")
		})
		if h := e.status(sick).Health; h.LastOutput != "disk on fire" || h.FailingStreak < 2 {
			t.Errorf("health %+v", h)
		}
		// What the checks cost the supervisor: its memory beside one
		// without a check (ready's), after some 20 checks.
		time.Sleep(2 * time.Second)
		for _, name := range []string{sick, ready} {
			s := e.status(name)
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.SupervisorPID))
			if err != nil {
				continue
			}
			var rss []string
			for _, l := range strings.Split(string(st), "\n") {
				if strings.HasPrefix(l, "RssAnon:") || strings.HasPrefix(l, "RssFile:") {
					rss = append(rss, strings.Join(strings.Fields(l), " "))
				}
			}
			checks := 0
			if s.Health != nil {
				checks = s.Health.Checks
			}
			t.Logf("supervisor of %s (%d checks, the last took %s): %s", name, checks, lastDuration(s.Health), strings.Join(rss, ", "))
		}
	})
	e.run("restart on unhealthy", func(t *testing.T) {
		testenv.Eventually(t, 60*time.Second, func() error {
			evs := e.events(killed, seq)
			if err := hasEvent(evs, api.EvMachineRestarting, "exited: unhealthy (exit 1): the health check failed 2 times in a row; last: exit code 1: nope"); err != nil {
				return err
			}
			return hasEvent(evs, api.EvMachineFailed, "gave up after 1 restarts")
		})
		s := e.status(killed)
		if s.LastExit == nil || !strings.HasPrefix(s.LastExit.Reason, "unhealthy") || s.LastExit.Code != 1 {
			t.Errorf("last exit %+v", s.LastExit)
		}
	})
}

// hasEvent says whether evs hold one of kind whose message contains msg.
func hasEvent(evs []api.Event, kind, msg string) error {
	var seen []string
	for _, ev := range evs {
		if ev.Kind == kind && strings.Contains(ev.Message, msg) {
			return nil
		}
		seen = append(seen, ev.Kind+": "+ev.Message)
	}
	return fmt.Errorf("no %s event with %q among:\n%s", kind, msg, strings.Join(seen, "\n"))
}

func lastDuration(h *api.Health) string {
	if h == nil {
		return "-"
	}
	return h.LastDuration
}
