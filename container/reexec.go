package container

import (
	"fmt"
	"os"
	"runtime"
)

// stageEnv selects a re-executed stage of the berth binary. The berth binary is
// its own helper (as runc's `runc init`): the payload's first process and the
// detached supervisor are /proc/self/exe started again with this variable set.
const stageEnv = "_BERTH_STAGE"

// initStage is the payload's first process (see init_linux.go).
const initStage = "init"

var stages = map[string]func(){}

// RegisterStage adds a re-executed stage: when the binary starts with the stage
// selected, Reexec runs fn instead of main. Call it from an init function.
func RegisterStage(name string, fn func()) {
	if _, dup := stages[name]; dup {
		panic("container: stage " + name + " registered twice")
	}
	stages[name] = fn
}

func init() {
	// The init stage changes namespaces and mounts and finally execs the guest's
	// init from the main thread: keep the main goroutine on the main thread from
	// the very start, as runc does for its init, so that every per-thread
	// setting (the late cgroup namespace, the root) applies to the thread that
	// execs.
	if os.Getenv(stageEnv) == initStage {
		runtime.LockOSThread()
	}
	RegisterStage(initStage, payloadInit)
}

// Reexec runs a re-executed stage of the berth binary (the payload's init stage,
// a detached supervisor) when the process was started as one, and never returns
// in that case. Every main that can be re-executed, and every test binary that
// starts machines, calls it first thing.
func Reexec() {
	name := os.Getenv(stageEnv)
	if name == "" {
		return
	}
	// What the stage runs (hooks' helpers, the guest's init) must not take
	// itself for a stage again.
	os.Unsetenv(stageEnv)
	fn, ok := stages[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "berth: unknown re-exec stage %q\n", name)
		os.Exit(127)
	}
	fn()
	os.Exit(0)
}
