package container_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
)

func init() {
	// notify runs inside a machine: a systemd-notify for busybox guests.
	container.RegisterStage("notify", testenv.SendNotify)
}

// appConfig is a busybox application machine running script, with the test
// binary as /opt/probe.
func appConfig(t *testing.T, prefix, script string) container.Config {
	t.Helper()
	cfg := newConfig(t, prefix)
	cfg.Root = container.Root{Dir: testenv.BusyboxGuest(t), ReadOnly: true}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Mounts = []container.Mount{{Type: "bind", Source: self, Target: "/opt/probe", ReadOnly: true}}
	cfg.Args = []string{"/bin/sh", "-c", script}
	return cfg
}

// TestReadinessNotify: an application with readiness notify is booting until
// it sends READY=1 on $NOTIFY_SOCKET, then running with its STATUS=.
func TestReadinessNotify(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	cfg := appConfig(t, "ready", `test "$NOTIFY_SOCKET" = /run/host/notify || exit 3
		while ! test -e /tmp/go; do sleep 0.1; done
		_BERTH_STAGE=notify /opt/probe "STATUS=serving on :80" READY=1 || exit 4
		exec sleep 1000`)
	cfg.Readiness, cfg.ReadyTimeout = container.ReadinessNotify, time.Minute
	m := start(t, cfg)
	st := m.WaitState(t, "booting", func(st container.State) bool { return st.Phase == container.PhaseBooting })
	if !st.ReadyAt.IsZero() {
		t.Errorf("ready before READY=1: %+v", st)
	}
	// Still booting a while later: only READY=1 makes it running.
	time.Sleep(300 * time.Millisecond)
	if st, _ := container.ReadState(cfg.RuntimeDir); st.Phase != container.PhaseBooting {
		t.Fatalf("phase %q before READY=1", st.Phase)
	}
	if _, code := m.sh(t, "touch /tmp/go"); code != 0 {
		t.Fatal("touch /tmp/go failed")
	}
	st = m.WaitPhase(t, container.PhaseRunning, 1)
	if st.ReadyAt.IsZero() || st.Status != "serving on :80" {
		t.Errorf("after READY=1: readyAt %v, status %q", st.ReadyAt, st.Status)
	}
}

// TestReadinessTimeout: an application that never sends READY=1 is killed
// when readiness.timeout passes, with reason "not ready".
func TestReadinessTimeout(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	cfg := appConfig(t, "notready", `exec sleep 1000`)
	cfg.Readiness, cfg.ReadyTimeout = container.ReadinessNotify, 500*time.Millisecond
	m := start(t, cfg)
	ex, err := m.Wait(t)
	if err != nil || ex.Reason != container.ReasonNotReady || ex.Code == 0 || !strings.Contains(ex.Error, "READY=1") {
		t.Fatalf("exit %+v, %v", ex, err)
	}
}

// TestHealthCheck: the supervisor runs the check inside the machine; it is
// healthy while the check passes, unhealthy after Retries failures in a row
// (with the check's output kept), healthy again after a pass; a check that
// hangs is killed at its timeout and counts as a failure.
func TestHealthCheck(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	cfg := appConfig(t, "health", `exec sleep 1000`)
	cfg.HealthCheck = &container.HealthCheck{
		Command: []string{"/bin/sh", "-c", `test -e /tmp/hang && exec sleep 1000
			test -e /tmp/sick && { echo "disk on fire"; exit 2; }
			echo fine`},
		Interval: 200 * time.Millisecond, Timeout: 500 * time.Millisecond, Retries: 3}
	m := start(t, cfg)
	st := m.WaitState(t, "healthy", func(st container.State) bool { return st.Health != nil && st.Health.Status == container.HealthHealthy })
	if st.Phase != container.PhaseRunning || st.Health.LastOutput != "fine" || st.Health.LastExitCode != 0 {
		t.Errorf("healthy: %+v %+v", st, *st.Health)
	}
	m.sh(t, "touch /tmp/sick")
	st = m.WaitState(t, "unhealthy", func(st container.State) bool {
		return st.Health != nil && st.Health.Status == container.HealthUnhealthy
	})
	if h := st.Health; h.FailingStreak != 3 || h.LastExitCode != 2 || h.LastOutput != "disk on fire" {
		t.Errorf("unhealthy: %+v", *h)
	}
	m.sh(t, "rm /tmp/sick; touch /tmp/hang")
	st = m.WaitState(t, "a check timed out", func(st container.State) bool {
		return st.Health != nil && strings.Contains(st.Health.LastError, "timed out")
	})
	if d, _ := time.ParseDuration(st.Health.LastDuration); d > 2*time.Second || st.Health.Status == container.HealthHealthy {
		t.Errorf("hung check: %+v", *st.Health)
	}
	m.sh(t, "rm /tmp/hang")
	m.WaitState(t, "healthy again", func(st container.State) bool { return st.Health != nil && st.Health.Status == container.HealthHealthy })
	// The hung checks were killed: no sleep 1000 is left but the command's.
	// (Counted once healthy again: before, a check started while /tmp/hang
	// was there may still be within its timeout.)
	out, _ := m.sh(t, "ps -o args | grep -c '^sleep 1000'")
	if strings.TrimSpace(out) != "1" {
		t.Errorf("sleep processes in the machine: %s", out)
	}
}

// TestHealthCheckKills: with KillUnhealthy the machine ends once unhealthy,
// with reason "unhealthy" and the last failure in its error.
func TestHealthCheckKills(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	cfg := appConfig(t, "sick", `exec sleep 1000`)
	cfg.HealthCheck = &container.HealthCheck{Command: []string{"/bin/sh", "-c", "echo no; exit 1"},
		Interval: 100 * time.Millisecond, Timeout: time.Second, Retries: 2, KillUnhealthy: true}
	m := start(t, cfg)
	ex, err := m.Wait(t)
	if err != nil || ex.Reason != container.ReasonUnhealthy || ex.Code != 1 || !strings.Contains(ex.Error, "2 times") || !strings.Contains(ex.Error, "no") {
		t.Fatalf("exit %+v, %v", ex, err)
	}
}

// TestHealthCheckBooted: a booted guest (busybox's init) has health checks
// too.
func TestHealthCheckBooted(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	cfg := newConfig(t, "bbhealth")
	cfg.Boot = true
	cfg.Root = container.Root{Dir: testenv.BusyboxGuest(t), ReadOnly: true}
	cfg.HealthCheck = &container.HealthCheck{Command: []string{"cat", "/proc/1/comm"},
		Interval: 100 * time.Millisecond, Timeout: time.Second, Retries: 1}
	m := start(t, cfg)
	st := m.WaitState(t, "healthy", func(st container.State) bool { return st.Health != nil && st.Health.Status == container.HealthHealthy })
	if st.Init != "busybox" || st.Health.LastOutput != "init" {
		t.Errorf("init %q, health %+v", st.Init, *st.Health)
	}
}
