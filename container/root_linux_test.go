package container

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestOpenRunningRootRefuses: no supervisor, an init not started yet, and a
// leader whose root is still the host's are all "not running", never the
// host's root handed out as the machine's.
func TestOpenRunningRootRefuses(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := OpenRunningRoot(dir); !errors.Is(err, ErrNotRunning) {
		t.Errorf("no state.json: %v", err)
	}
	start, err := ProcessStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// This process stands for the supervisor and the leader: its root is
	// the host's.
	for phase, want := range map[string]string{PhaseStarting: "(starting)", PhaseRunning: "no root of its own", PhaseExited: "(exited)"} {
		st := State{Name: "m", SupervisorPID: os.Getpid(), SupervisorStart: start, LeaderPID: os.Getpid(), Phase: phase}
		if err := writeState(dir, st); err != nil {
			t.Fatal(err)
		}
		if _, _, err := OpenRunningRoot(dir); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), want) {
			t.Errorf("phase %s: %v, want ErrNotRunning with %q", phase, err, want)
		}
	}
	st := State{Name: "m", SupervisorPID: os.Getpid(), SupervisorStart: start + 1, LeaderPID: os.Getpid(), Phase: PhaseRunning}
	if err := writeState(dir, st); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenRunningRoot(dir); !errors.Is(err, ErrNotRunning) {
		t.Errorf("a supervisor PID reused: %v", err)
	}
}
