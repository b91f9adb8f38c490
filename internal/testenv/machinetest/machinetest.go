// Package machinetest boots machines for berth's tests and waits for them: the
// machine's supervisor (package container's) runs in the test's own process,
// and the test waits on the state.json it writes, as berthd and berth do. It is
// apart from testenv because package container's own tests use testenv.
package machinetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
)

// Timeout bounds every wait of this package: a Debian guest boots in a few
// seconds, a busy CI machine may take many more.
const Timeout = 90 * time.Second

// Machine is a machine supervised by container.Supervise in this process.
type Machine struct {
	Config container.Config
	done   chan struct{}
	exit   container.ExitStatus
	err    error
}

// Start supervises cfg with hooks in a goroutine and returns at once. When the
// test ends, the machine is killed (Supervise's context is cancelled) and
// waited for; a failed test logs the tail of its console.
func Start(t testing.TB, cfg container.Config, hooks container.Hooks) *Machine {
	t.Helper()
	m := &Machine{Config: cfg, done: make(chan struct{})}
	// A state.json of an earlier run in the same runtime dir must not be
	// mistaken for this one.
	_ = os.Remove(filepath.Join(cfg.RuntimeDir, "state.json"))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		m.exit, m.err = container.Supervise(ctx, cfg, hooks)
		close(m.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-m.done:
		case <-time.After(30 * time.Second):
			t.Errorf("machine %s did not stop", cfg.Name)
		}
		if t.Failed() {
			t.Logf("console log of %s:\n%s", cfg.Name, m.console())
		}
	})
	return m
}

// Ended reports whether the machine has ended (Supervise returned), and how.
func (m *Machine) Ended() (ended bool, exit container.ExitStatus, err error) {
	select {
	case <-m.done:
		return true, m.exit, m.err
	default:
		return false, container.ExitStatus{}, nil
	}
}

// Wait waits until the machine has ended and returns how, and Supervise's
// error.
func (m *Machine) Wait(t testing.TB) (container.ExitStatus, error) {
	t.Helper()
	select {
	case <-m.done:
		return m.exit, m.err
	case <-time.After(Timeout):
		t.Fatalf("machine %s did not end within %s", m.Config.Name, Timeout)
	}
	return container.ExitStatus{}, nil
}

// WaitPhase waits until the machine is in phase, in its boot-th boot or a
// later one, and returns its state. The test fails if it ends first.
func (m *Machine) WaitPhase(t testing.TB, phase string, boots int) container.State {
	t.Helper()
	return m.WaitState(t, phase, func(st container.State) bool { return st.Phase == phase && st.Boots >= boots })
}

// WaitState waits until the machine's state satisfies ok (what says what
// that means, for the failure) and returns it. The test fails if the machine
// ends first.
func (m *Machine) WaitState(t testing.TB, what string, ok func(container.State) bool) container.State {
	t.Helper()
	st, err := waitState(m.Config.RuntimeDir, ok, func() error {
		if ended, exit, err := m.Ended(); ended {
			return fmt.Errorf("ended: %v (%v)", exit, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("machine %s, waiting until %s: %v\nconsole:\n%s", m.Config.Name, what, err, m.console())
	}
	return st
}

// WaitPhase waits until the state.json in runDir shows phase, in boot boots
// or a later one, for a machine whose supervisor runs elsewhere (detached,
// or a berth command).
func WaitPhase(t testing.TB, runDir, phase string, boots int) container.State {
	t.Helper()
	st, err := waitState(runDir, func(st container.State) bool { return st.Phase == phase && st.Boots >= boots }, nil)
	if err != nil {
		t.Fatalf("machine in %s, waiting until %s: %v", runDir, phase, err)
	}
	return st
}

// waitState polls the state in runDir until ok holds; it gives up when the
// state says the machine exited or ended says why it cannot come true.
func waitState(runDir string, ok func(container.State) bool, ended func() error) (container.State, error) {
	var st container.State
	err := testenv.Poll(Timeout, func() error {
		var err error
		st, err = container.ReadState(runDir)
		switch {
		case err == nil && ok(st):
			return nil
		case err == nil && st.Phase == container.PhaseExited:
			return testenv.Stop(fmt.Errorf("exited: %v", st.Exit))
		}
		if ended != nil {
			if err := ended(); err != nil {
				return testenv.Stop(err)
			}
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("%s in boot %d after %s", st.Phase, st.Boots, Timeout)
	})
	if errors.Is(err, os.ErrNotExist) {
		err = fmt.Errorf("no state after %s: %w", Timeout, err)
	}
	return st, err
}

func (m *Machine) console() string {
	b, _ := os.ReadFile(m.Config.ConsoleLog)
	return testenv.Tail(b, 4000)
}
