package container

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
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

// StageBinary is berth's stage binary: the machine supervisors and init
// stages without the command line, berthd, the definition language and the
// image store linked in. Beside berth and berthd (make build, berth install)
// it is what they re-execute for a stage: a third of their size, with a
// sixth of their package initialisation, so each running machine's
// supervisor maps and keeps less, and every start runs less before the
// guest's init.
const StageBinary = "berth-stage"

// isStageBinary is set by StageMain: this binary is berth-stage.
var isStageBinary bool

// StageMain is berth-stage's main: it runs the stage its environment
// selects, and refuses to run by hand.
func StageMain() {
	isStageBinary = true
	Reexec()
	fmt.Fprintln(os.Stderr, StageBinary+": runs berth's machine supervisors and init stages for berth and berthd; it is not run by hand")
	os.Exit(2)
}

var (
	sealedOnce sync.Once
	sealedPath = "/proc/self/exe"
	// sealedID is the sealed binary's device and inode (zero when not sealed).
	sealedDev, sealedIno uint64
)

// stageGODEBUG is the Go runtime settings every stage process runs with,
// after any GODEBUG of its caller's. memprofilerate=0: no one profiles a
// stage's heap, and each sample the profiler takes keeps a page of its
// hash table resident in a process that lives as long as its machine.
const stageGODEBUG = "memprofilerate=0"

// stageRuntimeEnv is env with the Go runtime settings of a stage process:
// stageGODEBUG added to its GODEBUG (made when it has none), and extra
// after it; and GOMAXPROCS=1 unless env sets it. One P is plenty for a
// supervisor, which waits (on the guest, its sockets, the console) and
// whose start is a sequence of system calls; each further P keeps caches of
// partly used spans of its own: 300 KB less resident per supervisor here.
func stageRuntimeEnv(env []string, extra string) []string {
	add := stageGODEBUG
	if extra != "" {
		add += "," + extra
	}
	out := slices.Clone(env)
	debugAt, procs := -1, false
	for i, e := range out {
		if strings.HasPrefix(e, "GODEBUG=") {
			debugAt = i
		}
		procs = procs || strings.HasPrefix(e, "GOMAXPROCS=")
	}
	if debugAt < 0 {
		out = append(out, "GODEBUG="+add)
	} else if v := strings.TrimPrefix(out[debugAt], "GODEBUG="); v != "" {
		out[debugAt] = "GODEBUG=" + v + "," + add
	} else {
		out[debugAt] = "GODEBUG=" + add
	}
	if !procs {
		out = append(out, "GOMAXPROCS=1")
	}
	return out
}

// stageCandidate is berth-stage beside this binary, "" when this binary is
// berth-stage or its path is unknown.
func stageCandidate() string {
	if isStageBinary {
		return ""
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(exe), StageBinary)
}

// sameBuild reports whether the binary at path was built together with this
// one: owned by the same user, writable by no one else, and with the same Go
// version, main module version and build settings (the revision, its time
// and whether the tree was modified among them).
func sameBuild(path string) bool {
	var me, it unix.Stat_t
	if unix.Stat("/proc/self/exe", &me) != nil || unix.Stat(path, &it) != nil {
		return false
	}
	if it.Mode&unix.S_IFMT != unix.S_IFREG || it.Uid != me.Uid || it.Mode&0o022 != 0 {
		return false
	}
	mine, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	theirs, err := buildinfo.ReadFile(path)
	if err != nil || theirs.GoVersion != mine.GoVersion || theirs.Main != mine.Main {
		return false
	}
	return slices.Equal(theirs.Settings, mine.Settings)
}

// selfExe is the path to re-execute for a stage (the payload's init stage, a
// detached supervisor whose children are entered into machines, the network
// resolver): berth-stage beside this binary when it is of the same build
// (see StageBinary), else this binary itself. It is /proc/self/fd/N of a
// descriptor for the binary on a read-only, detached clone of its mount
// (open_tree(2) with OPEN_TREE_CLONE, then mount_setattr(2) read-only; Linux
// 5.12), and berth-stage is checked through that descriptor, so what was
// checked is what runs. Such a process's /proc/PID/exe is then a file no one
// can write: a guest that reaches it (CVE-2019-5736, "#!/proc/self/exe" as
// its own init) gets EROFS, not the host's binary. The clone is attached
// nowhere, so nothing is left mounted; the descriptor keeps it alive for the
// process's life. Where the kernel lacks the calls it falls back to
// /proc/self/exe, whose file is busy (ETXTBSY) for as long as a supervisor
// runs it.
func selfExe() string {
	sealedOnce.Do(func() {
		fd := -1
		if cand := stageCandidate(); cand != "" {
			if fd = sealed(cand); fd >= 0 && !sameBuild(fdPath(fd)) {
				unix.Close(fd)
				fd = -1
			}
		}
		if fd < 0 {
			fd = sealed("/proc/self/exe")
		}
		if fd >= 0 {
			sealedPath = fdPath(fd)
		}
		var st unix.Stat_t
		if unix.Stat(sealedPath, &st) == nil {
			sealedDev, sealedIno = st.Dev, st.Ino
		}
	})
	return sealedPath
}

// execFailure adds to err, the failure to start a stage from selfExe, what
// selfExe's path is now when that is no longer the binary it sealed: a
// descriptor of the sealed clone closed by mistake, and its number taken by
// another file, makes every later start fail.
func execFailure(err error) error {
	if sealedIno == 0 {
		return err
	}
	var st unix.Stat_t
	if serr := unix.Stat(sealedPath, &st); serr != nil || st.Dev != sealedDev || st.Ino != sealedIno {
		now, _ := os.Readlink(sealedPath)
		return fmt.Errorf("%w (%s no longer names the sealed binary: it is %q, %v)", err, sealedPath, now, serr)
	}
	return err
}

// sealed makes a read-only, detached clone of the mount of the file at path
// and returns a descriptor for the file on it, -1 when the kernel cannot.
func sealed(path string) int {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		unix.Close(fd)
		return -1
	}
	return fd
}

// fdPath is the path of this process's descriptor fd.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
