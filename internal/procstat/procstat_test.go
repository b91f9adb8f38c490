package procstat

import (
	"os"
	"os/exec"
	"testing"
)

func TestAlive(t *testing.T) {
	start, err := StartTime(os.Getpid())
	if err != nil || start == 0 {
		t.Fatalf("StartTime(self) = %d, %v", start, err)
	}
	if !Alive(os.Getpid(), start) {
		t.Error("this process is not alive")
	}
	if Alive(os.Getpid(), start+1) {
		t.Error("a PID with another start time (reused) is taken for this process")
	}
	if Alive(0, 0) || Alive(-1, 0) {
		t.Error("PID 0 or -1 is alive")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := StartTime(cmd.Process.Pid); err == nil && Alive(cmd.Process.Pid, 0) {
		t.Error("an ended process is alive")
	}
}
