package container

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
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

var (
	sealedOnce sync.Once
	sealedPath = "/proc/self/exe"
)

// selfExe is the path to re-execute this binary by for a stage whose process
// the guest can see (the payload's init stage, the detached supervisor whose
// children are entered into machines): /proc/self/fd/N of an O_PATH file
// descriptor for the binary on a read-only, detached clone of its mount
// (open_tree(2) with OPEN_TREE_CLONE, then mount_setattr(2) read-only; Linux
// 5.12). Such a process's /proc/PID/exe is then a file no one can write: a
// guest that reaches it (CVE-2019-5736, "#!/proc/self/exe" as its own init)
// gets EROFS, not the host's berth binary. The clone is attached nowhere, so
// nothing is left mounted; the descriptor keeps it alive for the process's
// life. Where the kernel lacks the calls it falls back to /proc/self/exe,
// whose file is busy (ETXTBSY) for as long as a supervisor runs it.
func selfExe() string {
	sealedOnce.Do(func() {
		fd, err := unix.OpenTree(unix.AT_FDCWD, "/proc/self/exe", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return
		}
		attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
			unix.Close(fd)
			return
		}
		sealedPath = "/proc/self/fd/" + strconv.Itoa(fd)
	})
	return sealedPath
}
