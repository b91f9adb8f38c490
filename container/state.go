package container

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/berthd/berth/internal/procstat"
	"github.com/berthd/berth/internal/rundir"
)

// Phases of a machine in state.json.
const (
	PhaseStarting = "starting" // the supervisor sets up cgroups and the payload
	PhaseBooting  = "booting"  // init runs; READY=1 has not come yet
	PhaseRunning  = "running"  // READY=1 arrived, or init does not speak sd_notify
	PhaseStopping = "stopping" // a poweroff was requested
	PhaseExited   = "exited"   // the machine ended; Exit says how
)

// State is a supervisor's public state, RUN/machines/NAME/state.json. The
// supervisor rewrites it atomically on every change; readers never see a torn
// file.
type State struct {
	Name string `json:"name"`
	UUID string `json:"uuid"`
	// SupervisorPID and SupervisorStart (field 22 of /proc/PID/stat, in clock
	// ticks since boot) identify the supervisor even if its PID is reused.
	SupervisorPID   int    `json:"supervisorPid"`
	SupervisorStart uint64 `json:"supervisorStart"`
	LeaderPID       int    `json:"leaderPid,omitempty"`
	CgroupPath      string `json:"cgroupPath,omitempty"`
	Driver          string `json:"driver,omitempty"`
	// DeviceFence and Seccomp say how the machine is fenced: where its device
	// policy is placed, and its system call filter.
	DeviceFence string `json:"deviceFence,omitempty"`
	Seccomp     string `json:"seccomp,omitempty"`
	// Users is the machine's range of host IDs; nil: it has the host's.
	Users *Users `json:"users,omitempty"`
	Phase string `json:"phase"`
	// Init is the kind of PID 1: "systemd", "busybox", "init" (another init) or
	// "app" (an application under berth's reaper).
	Init      string      `json:"init,omitempty"`
	Boots     int         `json:"boots,omitempty"`
	StartedAt time.Time   `json:"startedAt"`
	BootedAt  time.Time   `json:"bootedAt,omitzero"` // the current boot's init exec
	ReadyAt   time.Time   `json:"readyAt,omitzero"`
	ExitedAt  time.Time   `json:"exitedAt,omitzero"`
	Exit      *ExitStatus `json:"exit,omitempty"`
	// Status is the guest's last STATUS= on the notify socket, cleaned.
	Status string `json:"status,omitempty"`
	// Health is the last health check's outcome; nil without a healthCheck.
	Health *Health `json:"health,omitempty"`
}

// ReadState reads RUN/machines/NAME/state.json.
func ReadState(runDir string) (State, error) {
	var s State
	b, err := os.ReadFile(rundir.Dir(runDir).State())
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", rundir.Dir(runDir).State(), err)
	}
	return s, nil
}

// writeState replaces state.json atomically (a temporary file renamed over
// it), without fsync: readers never see a torn file, and the state of a
// running machine means nothing after a crash of the host, when /run is gone
// and the machine with it. The supervisor writes it at every phase change,
// while the guest boots or shuts down; fsyncs there would compete with the
// guest's own disk writes (on this very host /run is not a tmpfs).
func writeState(runDir string, s State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(runDir, filepath.Base(rundir.Dir(runDir).StateTempPattern()))
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), rundir.Dir(runDir).State())
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// SupervisorAlive reports whether the supervisor that wrote s still runs: its
// PID exists and started at the recorded time (so a reused PID is not taken for
// it).
func (s State) SupervisorAlive() bool {
	if s.SupervisorPID <= 0 {
		return false
	}
	st, err := ProcessStartTime(s.SupervisorPID)
	return err == nil && st == s.SupervisorStart
}

// ProcessStartTime returns field 22 of /proc/PID/stat: when the process started,
// in clock ticks after boot.
func ProcessStartTime(pid int) (uint64, error) { return procstat.StartTime(pid) }

// WaitSupervisorGone waits until the supervisor of a machine that has ended
// (it may still be removing its cgroup) is gone, so a restart does not collide
// with it.
func WaitSupervisorGone(ctx context.Context, runDir string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st, err := ReadState(runDir)
		if err != nil || !st.SupervisorAlive() {
			return nil
		}
		if st.Phase != PhaseExited {
			return fmt.Errorf("already running (supervisor PID %d)", st.SupervisorPID)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the previous supervisor (PID %d) has not finished after %s", st.SupervisorPID, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
