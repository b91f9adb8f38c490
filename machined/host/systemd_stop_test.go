package host

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/supervisor"
)

// TestStoppedByThisRun: a systemd stop request counts only for the run it
// was made in; one of an earlier run of the same machine (the file stays in
// the runtime directory) does not hold the machine again after a later exit.
func TestStoppedByThisRun(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	write := func(req supervisor.SystemdStop) {
		b, _ := json.Marshal(req)
		if err := os.WriteFile(rundir.Dir(dir).SystemdStop(), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := stoppedBy(dir, at); got != "" {
		t.Errorf("no request: %q", got)
	}
	write(supervisor.SystemdStop{At: at.Add(time.Minute), Unit: "machine-m.scope"})
	if got := stoppedBy(dir, at); got != api.StoppedBySystemd {
		t.Errorf("request during the run: %q, want %q", got, api.StoppedBySystemd)
	}
	if got := stoppedBy(dir, at.Add(2*time.Minute)); got != "" {
		t.Errorf("request of an earlier run: %q, want none", got)
	}
	write(supervisor.SystemdStop{At: at.Add(time.Minute), HostShutdown: true})
	if got := stoppedBy(dir, at); got != api.StoppedByHostShutdown {
		t.Errorf("host shutdown: %q", got)
	}
}
