package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/berthd/berth/container"
)

// cliEnv makes the test binary, re-executed, berth itself: TestMain runs
// main, so a test sees what a person sees, exit status included (execute's
// mapping of errors to exit codes, and nothing of its own).
const cliEnv = "BERTH_TEST_CLI"

// The test binary is also berth (cliEnv) and the machine's init stage (berth
// re-executes itself).
func TestMain(m *testing.M) {
	container.Reexec()
	if os.Getenv(cliEnv) == "1" {
		main()
	}
	os.Exit(m.Run())
}

// run runs berth with args in a process of its own and returns its exit
// status, stdout and stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	var ee *exec.ExitError
	if err := cmd.Run(); err != nil && !errors.As(err, &ee) {
		t.Fatalf("berth %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}
