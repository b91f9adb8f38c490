package container_test

// The attempts of the escape suite (escape_test.go), as the probe runs them
// inside a machine. Each returns a detail and nil when the attempt got
// through, or the error that stopped it.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/berthd/berth/container"
)

// selfExeScript is a guest file whose interpreter is /proc/self/exe: the
// probe plants it, the test enters it from outside.
const selfExeScript = "/tmp/berth-probe-selfexe"

func init() {
	container.RegisterStage("escape", escapeStage)
}

var (
	// startFDs are the fds the probe was started with (read before it opens
	// anything itself).
	startFDs []string
	// machineMounts are the mount IDs of the machine's mount namespace.
	machineMounts map[uint64]bool
)

func escapeStage() {
	startFDs = listFDs()
	if len(os.Args) > 1 && os.Args[1] == "userns-child" {
		fmt.Printf("uid_map %q CapEff %016x\n", strings.Join(strings.Fields(readFile("/proc/self/uid_map")), " "), capsOf("self", "CapEff"))
		return
	}
	if err := insideMachine(); err != nil {
		fmt.Println("# the escape probe runs only inside a machine started by the test:", err)
		os.Exit(2)
	}
	machineMounts = mountIDs()
	selfexe := os.Args[len(os.Args)-1] == "selfexe"
	pid1 := readFile("/proc/1/comm")
	fmt.Printf("# probe PID %d (%s), PID 1 %q; CapEff %016x CapBnd %016x Seccomp %s NoNewPrivs %s\n",
		os.Getpid(), must(os.Readlink("/proc/self/exe")), strings.TrimSpace(pid1), capsOf("self", "CapEff"),
		capsOf("self", "CapBnd"), statusField("self", "Seccomp"), statusField("self", "NoNewPrivs"))
	for _, a := range escapeAttempts {
		if a.try == nil || a.inSelfExe != selfexe {
			continue
		}
		d, err := runAttempt(a.try)
		fmt.Printf("%s: %s\n", a.name, outcome(d, err))
	}
	if !selfexe {
		// What a guest's root would plant for whoever enters next.
		if err := os.WriteFile(selfExeScript, []byte("#!/proc/self/exe\n"), 0o755); err != nil {
			fmt.Println("# could not plant", selfExeScript+":", err)
		}
	}
}

// insideMachine refuses to run the probe in the host's namespaces: several
// attempts are harmless only because the machine has namespaces of its own.
func insideMachine() error {
	for _, ns := range []string{"pid", "mnt"} {
		host := os.Getenv("BERTH_PROBE_HOST_" + strings.ToUpper(ns) + "NS")
		own, err := os.Readlink("/proc/self/ns/" + ns)
		if host == "" || err != nil || own == host {
			return fmt.Errorf("%s namespace %q, the host's %q", ns, own, host)
		}
	}
	return nil
}

func runAttempt(f func() (string, error)) (d string, err error) {
	defer func() {
		if r := recover(); r != nil {
			d, err = "", failf("panic: %v", r)
		}
	}()
	return f()
}

// Outcomes.

// notedErr is an error with what the attempt found on its way.
type notedErr struct {
	err  error
	note string
}

func (e *notedErr) Error() string { return e.err.Error() + ": " + e.note }
func (e *notedErr) Unwrap() error { return e.err }

func noted(err error, note string) error { return &notedErr{err, note} }

// failErr means the attempt could not be made at all (a broken probe, not a
// denial).
type failErr struct{ msg string }

func (e *failErr) Error() string { return e.msg }

func failf(format string, a ...any) error { return &failErr{fmt.Sprintf(format, a...)} }

func outcome(d string, err error) escapeResult {
	oneLine := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	if err == nil {
		return escapeResult{allowed: true, detail: oneLine(d)}
	}
	var f *failErr
	if errors.As(err, &f) {
		return escapeResult{failed: true, reason: oneLine(f.msg), detail: oneLine(d)}
	}
	var notes []string
	for e := err; ; {
		var n *notedErr
		if !errors.As(e, &n) {
			break
		}
		notes = append(notes, n.note)
		e = n.err
	}
	return escapeResult{reason: errName(err), detail: oneLine(strings.Join(append(notes, d), " "))}
}

func errName(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return e.Error()
	}
	var n *notedErr
	if errors.As(err, &n) {
		return errName(n.err)
	}
	return err.Error()
}

// reached classifies a call made with arguments the kernel rejects after its
// permission checks: EPERM, EACCES (capabilities, a filter) and ENOSYS (no
// such call, or a filter's answer) deny; any other error means the kernel
// took the call.
func reached(err error) (string, error) {
	if err == nil {
		return "the call succeeded", nil
	}
	var e unix.Errno
	if !errors.As(err, &e) {
		return "", err
	}
	switch e {
	case unix.EPERM, unix.EACCES, unix.ENOSYS:
		return "", err
	}
	return unix.ErrnoName(e) + " after the permission checks: the kernel took the call", nil
}

func errnoOf(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Small readers.

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func must(s string, _ error) string { return s }

func statusField(pid, key string) string {
	for _, l := range strings.Split(readFile("/proc/"+pid+"/status"), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func capsOf(pid, key string) uint64 {
	v, _ := strconv.ParseUint(statusField(pid, key), 16, 64)
	return v
}

var capNames = [...]string{"chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
	"setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
	"sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
	"sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
	"mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore"}

func capList(m uint64) string {
	var out []string
	for i := 0; i < 64; i++ {
		if m&(1<<uint(i)) == 0 {
			continue
		}
		if i < len(capNames) {
			out = append(out, capNames[i])
		} else {
			out = append(out, "cap_"+strconv.Itoa(i))
		}
	}
	return strings.Join(out, ",")
}

// listFDs lists the open fds with raw system calls: os.Open would start Go's
// poller and add fds of its own.
func listFDs() []string {
	d, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	defer unix.Close(d)
	var names []string
	buf := make([]byte, 16<<10)
	for {
		n, err := unix.Getdents(d, buf)
		if err != nil || n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	var out []string
	for _, n := range names {
		if fd, _ := strconv.Atoi(n); fd != d {
			out = append(out, n+" -> "+must(os.Readlink("/proc/self/fd/"+n)))
		}
	}
	sort.Strings(out)
	return out
}

func mountIDs() map[uint64]bool {
	ids := map[uint64]bool{}
	for _, l := range strings.Split(readFile("/proc/self/mountinfo"), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			if id, err := strconv.ParseUint(f[0], 10, 64); err == nil {
				ids[id] = true
			}
		}
	}
	return ids
}

// outsideMachine tells whether path (a magic link of /proc included) is a
// file on a mount that is not in the machine's mount namespace: a file of the
// host.
func outsideMachine(path string) (bool, string, error) {
	target, _ := os.Readlink(path)
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, target, err
	}
	defer unix.Close(fd)
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil {
		return false, target, err
	}
	return !machineMounts[stx.Mnt_id], target, nil
}

// mountsOf lists the machine's mount points of the given filesystem types.
func mountsOf(types ...string) (points, fstypes []string) {
	for _, l := range strings.Split(readFile("/proc/self/mountinfo"), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		f, p := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(p) < 1 {
			continue
		}
		for _, t := range types {
			if p[0] == t {
				points = append(points, strings.ReplaceAll(f[4], `\040`, " "))
				fstypes = append(fstypes, t)
			}
		}
	}
	return points, fstypes
}

// onThread runs fn on an OS thread of its own that ends with it: what fn
// changes of its thread (an fs context, a mount namespace, credentials,
// tracees) goes with the thread. Never the main thread: the Go runtime keeps
// that one.
func onThread(fn func() (string, error)) (string, error) {
	type res struct {
		d   string
		err error
		tid int
	}
	ch := make(chan res, 1)
	var run func()
	run = func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			done := make(chan struct{})
			go func() { run(); close(done) }()
			<-done
			runtime.UnlockOSThread()
			return
		}
		tid := unix.Gettid()
		defer func() {
			if r := recover(); r != nil {
				ch <- res{"", failf("panic: %v", r), tid}
			}
		}()
		// No UnlockOSThread: the runtime ends the thread with the goroutine.
		d, err := fn()
		ch <- res{d, err, tid}
	}
	go run()
	r := <-ch
	// The thread ends just after the goroutine: wait for it, so that what it
	// held (a tracee above all) is let go before the next attempt.
	for i := 0; i < 200; i++ {
		if _, err := os.Stat("/proc/self/task/" + strconv.Itoa(r.tid)); err != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r.d, r.err
}

// inPrivateMountNS runs fn in a private copy of the machine's mount
// namespace, on a thread of its own: mounts and unmounts there leave the
// machine's own table alone (locked mounts stay locked in a copy).
func inPrivateMountNS(fn func() (string, error)) (string, error) {
	return onThread(func() (string, error) {
		if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
			return "", failf("private mount namespace: %v", err)
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return "", failf("make the private mount namespace private: %v", err)
		}
		return fn()
	})
}

func tempDir(prefix string) (string, func(), error) {
	d, err := os.MkdirTemp("/tmp", "berth-probe-"+prefix+"-")
	if err != nil {
		return "", nil, failf("%v", err)
	}
	return d, func() { _ = unix.Unmount(d, unix.MNT_DETACH); _ = os.Remove(d) }, nil
}

// mknodOpen makes a device node in the machine's /dev (the one filesystem
// there that allows devices), opens it and removes it.
func mknodOpen(name string, mode uint32, major, minor uint32, flags int) (int, error) {
	p := "/dev/" + name
	_ = unix.Unlink(p)
	if err := unix.Mknod(p, mode|0o600, int(unix.Mkdev(major, minor))); err != nil {
		return -1, noted(err, fmt.Sprintf("mknod %d:%d", major, minor))
	}
	defer unix.Unlink(p)
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, noted(err, fmt.Sprintf("mknod %d:%d worked, open", major, minor))
	}
	return fd, nil
}

// hostDisk is the first disk the kernel lists (/proc/partitions is the host's).
func hostDisk() (string, uint32, uint32) {
	for _, l := range strings.Split(readFile("/proc/partitions"), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 || strings.HasPrefix(f[3], "loop") || strings.HasPrefix(f[3], "ram") {
			continue
		}
		maj, err1 := strconv.ParseUint(f[0], 10, 32)
		min, err2 := strconv.ParseUint(f[1], 10, 32)
		if err1 == nil && err2 == nil {
			return f[3], uint32(maj), uint32(min)
		}
	}
	return "loop0", 7, 0
}

// readHostDisk makes a node of the host's disk and reads its first sector.
// The node is what the device fences are for: once mknod works, they are
// down, whatever refuses the open after them (on a host that is itself
// confined, its own root cannot open the disk either: the test says so).
func readHostDisk() (string, error) {
	name, maj, min := hostDisk()
	p := "/dev/berth-probe-disk"
	_ = unix.Unlink(p)
	node := fmt.Sprintf("b %d:%d (the host's %s)", maj, min, name)
	if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(maj, min))); err != nil {
		return "", noted(err, "mknod "+node)
	}
	defer unix.Unlink(p)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "mknod " + node + " worked; open: " + errName(err) + hostDiskNote(), nil
	}
	defer unix.Close(fd)
	buf := make([]byte, 512)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		return "mknod " + node + " and open worked; read: " + errName(err), nil
	}
	return fmt.Sprintf("read %d bytes of %s", n, node), nil
}

func hostDiskNote() string {
	if h := os.Getenv("BERTH_PROBE_HOST_DISK"); h != "ok" {
		return " (the host's own root is refused too: " + h + ")"
	}
	return ""
}

// What the entered probe got.

func tryLeakedFDs() (string, error) {
	var extra, std []string
	for _, l := range startFDs {
		n, _, _ := strings.Cut(l, " -> ")
		fd, err := strconv.Atoi(n)
		if err == nil && fd <= 2 {
			std = append(std, l)
			continue
		}
		extra = append(extra, l)
		if d := hostDirThrough("/proc/self/fd/" + n); d != "" {
			extra[len(extra)-1] += " [" + d + "]"
		}
	}
	if len(extra) > 0 {
		return "open at start: " + strings.Join(extra, ", "), nil
	}
	return "", noted(errors.New("none"), "fds 0-2 only: "+strings.Join(std, ", "))
}

// hostDirThrough walks into a directory of the host through a magic link (an
// fd, a cwd) the way CVE-2024-21626 did, on a thread of its own, and lists it.
func hostDirThrough(link string) string {
	if outside, _, err := outsideMachine(link); err != nil || !outside {
		return ""
	}
	d, err := onThread(func() (string, error) {
		fd, err := unix.Open(link, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return "", err
		}
		if err := unix.Fchdir(fd); err != nil {
			return "", err
		}
		ents, err := os.ReadDir(".")
		if err != nil {
			return "", err
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return "cwd there lists: " + strings.Join(names, " "), nil
	})
	if err != nil {
		return ""
	}
	return d
}

func tryCwdRoot() (string, error) {
	var out, seen []string
	for _, p := range []string{"/proc/self/cwd", "/proc/self/root"} {
		outside, target, err := outsideMachine(p)
		if err != nil {
			return "", failf("%s: %v", p, err)
		}
		seen = append(seen, p+" -> "+target)
		if outside {
			out = append(out, p+" -> "+target+" (a mount of the host)")
		}
	}
	if len(out) > 0 {
		return strings.Join(out, ", "), nil
	}
	return "", noted(errors.New("inside"), strings.Join(seen, ", "))
}

func tryEnterCaps() (string, error) {
	eff, bnd := capsOf("self", "CapEff"), capsOf("1", "CapBnd")
	if extra := eff &^ bnd; extra != 0 {
		return "holds " + capList(extra) + " outside PID 1's bounding set", nil
	}
	return "", noted(errors.New("none"), fmt.Sprintf("CapEff %016x within PID 1's CapBnd %016x", eff, bnd))
}

// File handles and fanotify.

func tryShocker() (string, error) {
	points, types := mountsOf("ext4", "ext3", "ext2")
	// Mounts berth makes itself (the notify socket, binds of the definition)
	// before the test's own bind of the probe.
	order := make([]int, len(points))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return points[order[a]] != "/opt/probe" && points[order[b]] == "/opt/probe" })
	var last error = noted(unix.ENOENT, "no ext2/3/4 mount in the machine to take a handle through")
	for _, i := range order {
		p := points[i]
		h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, p, 0)
		if err != nil {
			last = noted(err, "name_to_handle_at "+p)
			continue
		}
		if h.Type() != 1 { // FILEID_INO32_GEN: {inode, generation}
			continue
		}
		mfd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0) // not O_PATH: the kernel wants a real open file
		if err != nil {
			last = noted(err, "open "+p+" as the mount fd") // a socket (the notify bind) does not open
			continue
		}
		var b [8]byte
		binary.LittleEndian.PutUint32(b[0:], 2) // inode 2, generation 0: the root directory of an ext filesystem
		fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(1, b[:]), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
		unix.Close(mfd)
		if err != nil {
			return "", noted(err, "through "+p)
		}
		f := os.NewFile(uintptr(fd), "by-handle")
		names, _ := f.Readdirnames(-1)
		f.Close()
		sort.Strings(names)
		if len(names) > 14 {
			names = append(names[:14], "…")
		}
		return fmt.Sprintf("opened the root of the %s filesystem under %s: %s", types[i], p, strings.Join(names, " ")), nil
	}
	return "", last
}

func tryFanotifyInit() (string, error) {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	return "a notification group", nil
}

func tryFanotifyMarkFS() (string, error) {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return "", noted(err, "fanotify_init")
	}
	defer unix.Close(fd) // closing the group removes the mark
	target := "/"
	if points, _ := mountsOf("ext4", "ext3", "ext2", "xfs", "btrfs"); len(points) > 0 {
		target = points[0]
	}
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, unix.FAN_OPEN, unix.AT_FDCWD, target); err != nil {
		return "", noted(err, "on the filesystem of "+target)
	}
	return "every open on the filesystem of " + target + " reported (mark removed)", nil
}

// Keyrings, perf, swap, bpf.

func keyringNote(id int, which string) string {
	host := os.Getenv("BERTH_PROBE_HOST_" + which + "_KEYRING")
	if host == strconv.Itoa(id) {
		return fmt.Sprintf("keyring %d, the same as the host's", id)
	}
	return fmt.Sprintf("keyring %d (the host's: %q)", id, host)
}

func tryUserKeyring() (string, error) {
	id, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_USER_KEYRING, false)
	if err != nil {
		return "", err
	}
	return keyringNote(id, "USER"), nil
}

func trySessionKeyring() (string, error) {
	id, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_SESSION_KEYRING, false)
	if err != nil {
		return "", err
	}
	return keyringNote(id, "SESSION"), nil
}

func tryAddKey() (string, error) {
	_, err := unix.AddKey("", "berth-escape-probe", nil, unix.KEY_SPEC_THREAD_KEYRING)
	return reached(err)
}

func tryRequestKey() (string, error) {
	typ, _ := unix.BytePtrFromString("user")
	desc, _ := unix.BytePtrFromString("berth-escape-probe-absent")
	// No callout (NULL): the kernel only searches, it runs nothing.
	_, _, e := unix.Syscall6(unix.SYS_REQUEST_KEY, uintptr(unsafe.Pointer(typ)), uintptr(unsafe.Pointer(desc)), 0, 0, 0, 0)
	return reached(errnoOf(e))
}

func tryPerf() (string, error) {
	attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK, Bits: unix.PerfBitDisabled}
	attr.Size = uint32(unsafe.Sizeof(attr))
	fd, err := unix.PerfEventOpen(&attr, -1, 0, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	return "a system-wide event on CPU 0 (disabled, closed)", nil
}

func swap(nr uintptr) (string, error) {
	p, _ := unix.BytePtrFromString("/nonexistent-berth-probe/swap")
	_, _, e := unix.Syscall(nr, uintptr(unsafe.Pointer(p)), 0, 0)
	return reached(errnoOf(e))
}

func trySwapon() (string, error)  { return swap(unix.SYS_SWAPON) }
func trySwapoff() (string, error) { return swap(unix.SYS_SWAPOFF) }

func bpfCall(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

type bpfIDAttr struct{ id, next, flags uint32 }

type bpfQueryAttr struct {
	targetFD, attachType, queryFlags, attachFlags uint32
	progIDs                                       uint64
	progCnt, _                                    uint32
	progAttachFlags, linkIDs, linkAttachFlags     uint64
	revision                                      uint64
}

type bpfAttachAttr struct{ targetFD, attachBPFFD, attachType, attachFlags, replaceBPFFD uint32 }

func tryBPFNextID() (string, error) {
	n := 0
	for attr := (bpfIDAttr{}); n < 100000; n++ {
		if _, err := bpfCall(unix.BPF_PROG_GET_NEXT_ID, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
			if n == 0 && !errors.Is(err, unix.ENOENT) {
				return "", err
			}
			break
		}
		attr.id = attr.next
	}
	return fmt.Sprintf("listed %d BPF programs of the host", n), nil
}

// liftBPFFence detaches every BPF_CGROUP_DEVICE program from the machine's
// /sys/fs/cgroup (its cgroup namespace's root); restore attaches them again.
func liftBPFFence() (restore func() error, detail string, err error) {
	cg, err := unix.Open("/sys/fs/cgroup", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", failf("open /sys/fs/cgroup: %v", err)
	}
	ids := make([]uint32, 64)
	q := bpfQueryAttr{targetFD: uint32(cg), attachType: unix.BPF_CGROUP_DEVICE, progIDs: uint64(uintptr(unsafe.Pointer(&ids[0]))), progCnt: uint32(len(ids))}
	_, err = bpfCall(unix.BPF_PROG_QUERY, unsafe.Pointer(&q), unsafe.Sizeof(q))
	runtime.KeepAlive(ids)
	if err != nil {
		unix.Close(cg)
		return nil, "", noted(err, "BPF_PROG_QUERY")
	}
	if q.progCnt == 0 {
		unix.Close(cg)
		return nil, "", noted(unix.ENOENT, "no device program on the machine's /sys/fs/cgroup")
	}
	var progs []int
	restore = func() error {
		var errs []error
		for _, p := range progs {
			a := bpfAttachAttr{targetFD: uint32(cg), attachBPFFD: uint32(p), attachType: unix.BPF_CGROUP_DEVICE, attachFlags: unix.BPF_F_ALLOW_MULTI}
			if _, err := bpfCall(unix.BPF_PROG_ATTACH, unsafe.Pointer(&a), unsafe.Sizeof(a)); err != nil {
				errs = append(errs, err)
			}
			unix.Close(p)
		}
		unix.Close(cg)
		return errors.Join(errs...)
	}
	for _, id := range ids[:q.progCnt] {
		ga := bpfIDAttr{id: id}
		p, err := bpfCall(unix.BPF_PROG_GET_FD_BY_ID, unsafe.Pointer(&ga), unsafe.Sizeof(ga))
		if err != nil {
			_ = restore()
			return nil, "", noted(err, fmt.Sprintf("BPF_PROG_GET_FD_BY_ID %d", id))
		}
		a := bpfAttachAttr{targetFD: uint32(cg), attachBPFFD: uint32(p), attachType: unix.BPF_CGROUP_DEVICE}
		if _, err := bpfCall(unix.BPF_PROG_DETACH, unsafe.Pointer(&a), unsafe.Sizeof(a)); err != nil {
			unix.Close(p)
			_ = restore()
			return nil, "", noted(err, fmt.Sprintf("BPF_PROG_DETACH of program %d", id))
		}
		progs = append(progs, p)
	}
	return restore, fmt.Sprintf("device programs %v", ids[:q.progCnt]), nil
}

func tryBPFDetach() (string, error) {
	restore, d, err := liftBPFFence()
	if err != nil {
		return "", err
	}
	if err := restore(); err != nil {
		return "detached " + d + "; RE-ATTACHING FAILED: " + err.Error(), nil
	}
	return "detached " + d + " (attached again)", nil
}

// The device cgroup and device nodes.

// liftV1Fence mounts the v1 devices hierarchy (in the current, private mount
// namespace) and allows every block device at its root, the machine's own
// device cgroup; restore denies them again. The hierarchy stays mounted until
// restore.
func liftV1Fence() (restore func(), err error) {
	dir, cleanup, err := tempDir("devices")
	if err != nil {
		return nil, err
	}
	if err := unix.Mount("cgroup", dir, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "devices"); err != nil {
		cleanup()
		return nil, noted(err, "mount -t cgroup -o devices")
	}
	if err := os.WriteFile(filepath.Join(dir, "devices.allow"), []byte("b *:* rwm"), 0); err != nil {
		cleanup()
		return nil, noted(err, "write devices.allow")
	}
	return func() {
		_ = os.WriteFile(filepath.Join(dir, "devices.deny"), []byte("b *:* rwm"), 0)
		cleanup()
	}, nil
}

func tryDevicesV1Allow() (string, error) {
	return inPrivateMountNS(func() (string, error) {
		restore, err := liftV1Fence()
		if err != nil {
			return "", err
		}
		restore()
		return "the machine's own device cgroup took 'b *:* rwm' (denied again)", nil
	})
}

func tryBlockFencesDown() (string, error) {
	return inPrivateMountNS(func() (string, error) {
		var lifted []string
		if restore, d, err := liftBPFFence(); err == nil {
			defer restore()
			lifted = append(lifted, "cgroup2 BPF ("+d+")")
		} else {
			lifted = append(lifted, "not cgroup2 BPF: "+errName(err))
		}
		if restore, err := liftV1Fence(); err == nil {
			defer restore()
			lifted = append(lifted, "v1 devices")
		} else {
			lifted = append(lifted, "not v1 devices: "+errName(err))
		}
		d, err := readHostDisk()
		if err != nil {
			return "", noted(err, "fences lifted: "+strings.Join(lifted, ", "))
		}
		return d + "; fences lifted: " + strings.Join(lifted, ", ") + " (restored)", nil
	})
}

func tryConsoleNode() (string, error) {
	fd, err := mknodOpen("berth-probe-console", unix.S_IFCHR, 5, 1, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK)
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	return "opened the host's kernel console (the kernel's console: " + strings.TrimSpace(readFile("/sys/class/tty/console/active")) + ")", nil
}

func tryMknodBlock() (string, error) { return readHostDisk() }

func tryOpenBlock() (string, error) {
	var found []string
	_ = filepath.WalkDir("/dev", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeDevice != 0 && d.Type()&fs.ModeCharDevice == 0 {
			found = append(found, p)
		}
		return nil
	})
	if len(found) == 0 {
		return "", noted(unix.ENOENT, "no block device node in the machine's /dev")
	}
	for _, p := range found {
		if fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			unix.Close(fd)
			return "opened " + p, nil
		}
	}
	return "", noted(unix.EPERM, "none of "+strings.Join(found, " ")+" opens")
}

func tryDevMem() (string, error) {
	fd, err := mknodOpen("berth-probe-mem", unix.S_IFCHR, 1, 1, unix.O_RDONLY)
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	return "opened the host's /dev/mem", nil
}

func tryKmsg() (string, error) {
	var fd int
	var err error
	if _, serr := os.Stat("/dev/kmsg"); serr == nil {
		fd, err = unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	} else {
		fd, err = mknodOpen("berth-probe-kmsg", unix.S_IFCHR, 1, 11, unix.O_RDONLY|unix.O_NONBLOCK)
	}
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	n, _ := unix.Read(fd, buf)
	return fmt.Sprintf("read a record of %d bytes of the host's kernel log", n), nil
}

func tryHostPty() (string, error) {
	fd, err := mknodOpen("berth-probe-pty0", unix.S_IFCHR, 136, 0, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK)
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	return "opened c 136:0 outside a devpts", nil
}

func tryTun() (string, error) {
	var fd int
	var err error
	if _, serr := os.Stat("/dev/net/tun"); serr == nil {
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	} else {
		fd, err = mknodOpen("berth-probe-tun", unix.S_IFCHR, 10, 200, unix.O_RDWR)
	}
	if err != nil {
		return "", err
	}
	defer unix.Close(fd) // not persistent: the link goes with the fd
	ifr, _ := unix.NewIfreq("bprobe%d")
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return "", noted(err, "TUNSETIFF")
	}
	return "made " + ifr.Name() + " in the machine's network namespace (gone with the fd)", nil
}

// Capabilities berth drops, and calls a filter stops.

func tryInitModule() (string, error)  { return reached(unix.InitModule(nil, "")) }
func tryFinitModule() (string, error) { return reached(unix.FinitModule(-1, "", 0)) }
func tryDeleteModule() (string, error) {
	return reached(unix.DeleteModule("berth_escape_probe_absent", unix.O_NONBLOCK))
}

func tryKexecLoad() (string, error) {
	// An unknown flag (0x80) and far too many segments: EINVAL after the
	// capability check, nothing loaded or unloaded.
	_, _, e := unix.Syscall6(unix.SYS_KEXEC_LOAD, 0, 1<<20, 0, 0x80, 0, 0)
	return reached(errnoOf(e))
}

func tryKexecFileLoad() (string, error) {
	// An unknown flag (0x100; not KEXEC_FILE_UNLOAD): EINVAL after the check.
	m1 := ^uintptr(0)
	_, _, e := unix.Syscall6(unix.SYS_KEXEC_FILE_LOAD, m1, m1, 0, 0, 0x100, 0)
	return reached(errnoOf(e))
}

func tryIopl() (string, error) {
	if err := unix.Iopl(3); err != nil {
		return reached(err)
	}
	_ = unix.Iopl(0)
	return "I/O privilege level 3 (set back to 0)", nil
}

func tryIoperm() (string, error) {
	if err := unix.Ioperm(0x80, 1, 1); err != nil {
		return reached(err)
	}
	_ = unix.Ioperm(0x80, 1, 0)
	return "port 0x80 (given back)", nil
}

func hasCap(c int) bool { return capsOf("self", "CapEff")&(1<<uint(c)) != 0 }

func tryClockSettime() (string, error) {
	err := unix.ClockSettime(unix.CLOCK_REALTIME, &unix.Timespec{Sec: 0, Nsec: -1})
	switch {
	case err == nil:
		return "the host's clock was set", nil
	case errors.Is(err, unix.EINVAL) && hasCap(unix.CAP_SYS_TIME):
		return "EINVAL for a bad time with CAP_SYS_TIME held: a good time would set the host's clock", nil
	case errors.Is(err, unix.EINVAL):
		return "", noted(errors.New("no CAP_SYS_TIME"), "the call reaches the kernel (EINVAL for a bad time, checked before the capability)")
	}
	return "", err
}

func trySettimeofday() (string, error) {
	tz := struct{ minuteswest, dsttime int32 }{10000, 0}
	_, _, e := unix.Syscall(unix.SYS_SETTIMEOFDAY, 0, uintptr(unsafe.Pointer(&tz)), 0)
	return reached(errnoOf(e))
}

func tryAdjtimex() (string, error) {
	_, err := unix.Adjtimex(&unix.Timex{Modes: unix.ADJ_OFFSET | unix.ADJ_TICK, Tick: 1})
	return reached(err)
}

func tryRebootCAD() (string, error) {
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_ON)
	if err == nil {
		return "Ctrl-Alt-Del of the host now reboots at once", nil
	}
	if errors.Is(err, unix.EINVAL) {
		return "", noted(err, "the PID namespace's reboot() knows only restart and power off")
	}
	return "", err
}

func tryAcct() (string, error) {
	p, _ := unix.BytePtrFromString("/nonexistent-berth-probe/acct")
	_, _, e := unix.Syscall(unix.SYS_ACCT, uintptr(unsafe.Pointer(p)), 0, 0)
	return reached(errnoOf(e))
}

func trySyslog() (string, error) {
	buf := make([]byte, 1<<16)
	n, err := unix.Klogctl(3, buf) // SYSLOG_ACTION_READ_ALL: reads, clears nothing
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("read %d bytes of the host kernel's log", n), nil
}

func tryQuotactl() (string, error) {
	p, _ := unix.BytePtrFromString("/dev/berth-probe-absent")
	const qcmdSyncUser = 0x800001 << 8 // QCMD(Q_SYNC, USRQUOTA)
	_, _, e := unix.Syscall6(unix.SYS_QUOTACTL, qcmdSyncUser, uintptr(unsafe.Pointer(p)), 0, 0, 0, 0)
	return reached(errnoOf(e))
}

func tryLookupDcookie() (string, error) {
	_, _, e := unix.Syscall(unix.SYS_LOOKUP_DCOOKIE, 0, 0, 0)
	return reached(errnoOf(e))
}

func tryMmapLow() (string, error) {
	addr, _, e := unix.Syscall6(unix.SYS_MMAP, 0, 4096, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED, ^uintptr(0), 0)
	if e != 0 {
		return "", e
	}
	_, _, _ = unix.Syscall(unix.SYS_MUNMAP, addr, 4096, 0)
	return fmt.Sprintf("mapped address %#x (unmapped)", addr), nil
}

// PID 1 and the host's binary.

// pid1Dumpable tells whether PID 1 is dumpable: without CAP_SYS_PTRACE in
// the effective set (on a thread of its own), ptrace of a non-dumpable
// process fails even for its own uid; the capability comparison uses the
// permitted set, so this tells only when PID 1 holds no more than the probe.
func pid1Dumpable() string {
	if capsOf("1", "CapPrm")&^capsOf("self", "CapPrm") != 0 {
		return "unknown (PID 1 holds more than the probe)"
	}
	d, err := onThread(func() (string, error) {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return "", err
		}
		data[0].Effective &^= 1 << unix.CAP_SYS_PTRACE
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return "", err
		}
		if err := unix.PtraceSeize(1); err != nil {
			return "", err
		}
		return "yes", nil // detached when the thread ends
	})
	if err != nil {
		return "no (" + errName(err) + ")"
	}
	return d
}

func tryPID1Caps() (string, error) {
	prm, eff, bnd := capsOf("1", "CapPrm"), capsOf("1", "CapEff"), capsOf("self", "CapBnd")
	d := fmt.Sprintf("PID 1 (%s): CapPrm %016x CapEff %016x CapBnd %016x Seccomp %s NoNewPrivs %s dumpable %s",
		strings.TrimSpace(readFile("/proc/1/comm")), prm, eff, capsOf("1", "CapBnd"), statusField("1", "Seccomp"),
		statusField("1", "NoNewPrivs"), pid1Dumpable())
	if extra := (prm | eff) &^ bnd; extra != 0 {
		return "holds " + capList(extra) + "; " + d, nil
	}
	return "", noted(errors.New("none"), d)
}

func tryPtracePID1() (string, error) {
	return onThread(func() (string, error) {
		if err := unix.PtraceSeize(1); err != nil {
			return "", err
		}
		return "seized PID 1 (" + strings.TrimSpace(readFile("/proc/1/comm")) + "); detached as the thread ends", nil
	})
}

func tryProc1Mem() (string, error) {
	fd, err := unix.Open("/proc/1/mem", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	return "opened for writing (not written)", nil
}

func tryPID1Files() (string, error) {
	paths := []string{"/proc/1/cwd", "/proc/1/root"}
	fds, _ := filepath.Glob("/proc/1/fd/*")
	paths = append(paths, fds...)
	var out []string
	for _, p := range paths {
		l, _ := os.Readlink(p)
		if !strings.HasPrefix(l, "/") || strings.HasPrefix(l, "/memfd:") {
			continue // pipes, sockets, anonymous inodes, memfds: no path of anyone's
		}
		if outside, target, err := outsideMachine(p); err == nil && outside {
			if d := hostDirThrough(p); d != "" {
				target += " [" + d + "]"
			}
			out = append(out, p+" -> "+target)
		}
	}
	if len(out) > 0 {
		return "files of the host: " + strings.Join(out, ", "), nil
	}
	return "", noted(errors.New("none"), fmt.Sprintf("%d fds of PID 1, its cwd and root: all the machine's", len(fds)))
}

func exeOutside(p string) (string, error) {
	outside, target, err := outsideMachine(p)
	if err != nil {
		return "", err
	}
	if outside {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err == nil && st.Flags&unix.ST_RDONLY != 0 {
			return "", noted(unix.EROFS, target+" is a file of the host on a read-only mount: nobody can write it")
		}
		return target + " is a file of the host, outside every mount of the machine, on a writable mount", nil
	}
	return "", noted(errors.New("the machine's"), target)
}

func tryPID1Exe() (string, error) { return exeOutside("/proc/1/exe") }

func openWrite(p string) (string, error) {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", noted(err, must(os.Readlink(p)))
	}
	unix.Close(fd)
	return must(os.Readlink(p)) + " opened for writing (not written)", nil
}

func tryPID1ExeWrite() (string, error)  { return openWrite("/proc/1/exe") }
func tryEnterExeWrite() (string, error) { return openWrite("/proc/self/exe") }

func trySelfExeHost() (string, error) {
	d, err := exeOutside("/proc/self/exe")
	if err == nil {
		d = fmt.Sprintf("%s; it runs inside as PID %d", d, os.Getpid())
	}
	return d, err
}

func trySelfExeWrite() (string, error) { return openWrite("/proc/self/exe") }

// Namespaces.

func tryUserfaultfd() (string, error) {
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC, 0, 0)
	if e != 0 {
		return "", e
	}
	unix.Close(int(fd))
	return "a userfaultfd for kernel faults too (no UFFD_USER_MODE_ONLY)", nil
}

func tryUserns() (string, error) {
	cmd := exec.Command("/proc/self/exe", "userns-child")
	cmd.Env = []string{"_BERTH_STAGE=escape"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		var e syscall.Errno
		if errors.As(err, &e) {
			return "", e
		}
		return "", noted(err, string(out))
	}
	return "a child in a user namespace of its own: " + string(out), nil
}

func tryHostPIDs() (string, error) {
	host := os.Getenv("BERTH_PROBE_HOST_PIDNS")
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var hits []string
	for _, p := range procs {
		if l, _ := os.Readlink(p + "/ns/pid"); l == host {
			hits = append(hits, filepath.Base(p))
		}
	}
	if len(hits) > 0 {
		return "processes of the host's PID namespace: " + strings.Join(hits, " "), nil
	}
	return "", noted(errors.New("none"), fmt.Sprintf("%d processes visible, none in the host's PID namespace", len(procs)))
}

func tryChroot() (string, error) {
	dir, cleanup, err := tempDir("chroot")
	if err != nil {
		return "", err
	}
	defer cleanup()
	return onThread(func() (string, error) {
		var before, after unix.Stat_t
		if err := unix.Stat("/", &before); err != nil {
			return "", failf("%v", err)
		}
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return "", failf("unshare fs: %v", err)
		}
		if err := unix.Chroot(dir); err != nil {
			return "", noted(err, "chroot")
		}
		for i := 0; i < 64; i++ {
			_ = unix.Chdir("..")
		}
		if err := unix.Chroot("."); err != nil {
			return "", noted(err, "chroot .")
		}
		if err := unix.Stat("/", &after); err != nil {
			return "", failf("%v", err)
		}
		if after.Dev != before.Dev || after.Ino != before.Ino {
			names, _ := os.ReadDir("/")
			var ns []string
			for _, n := range names {
				ns = append(ns, n.Name())
			}
			return "a root above the machine's: " + strings.Join(ns, " "), nil
		}
		return "", noted(errors.New("the machine's root"), "nothing above the machine's root in its mount namespace")
	})
}

func tryAudit() (string, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_AUDIT)
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	return "an audit netlink socket", nil
}

func tryUevent() (string, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		return "", noted(err, "bind")
	}
	// Binding works in any network namespace: what the socket gets is the
	// question. The kernel broadcasts a uevent tagged with a network
	// namespace (a net device's) to that namespace alone, and an untagged
	// one (every other device of the host) only to the network namespaces
	// the initial user namespace owns (lib/kobject_uevent.c, uevent_net_init
	// lists no other). So: who owns this one, and what arrives while a link
	// of the machine's own is made.
	initial, owner := netnsOwnerInitial()
	own, foreign := listenUevents(fd)
	d := "bound to the uevent multicast group; the network namespace " + owner + "; " + own
	switch {
	case len(foreign) > 0:
		return d + "; uevents of the host arrived: " + strings.Join(foreign, ", "), nil
	case initial:
		return d + ": the host's uevents arrive here", nil
	}
	return "", noted(errors.New("no host uevents"), d+": the host's (untagged) uevents are not broadcast to it")
}

// nsGetUserns is NS_GET_USERNS (linux/nsfs.h): an fd of the user namespace
// that owns a namespace.
const nsGetUserns = 0xb701

// initialUserNS says whether the probe's own user namespace is the initial
// one: its uid_map is the identity of every ID, and it is the test's (the
// host's).
func initialUserNS() bool {
	own, _ := os.Readlink("/proc/self/ns/user")
	host := os.Getenv("BERTH_PROBE_HOST_USERNS")
	return strings.Join(strings.Fields(readFile("/proc/self/uid_map")), " ") == "0 0 4294967295" && (host == "" || own == host)
}

// netnsOwnerInitial says whether the probe's network namespace is owned by
// the initial user namespace, and by which one it is.
func netnsOwnerInitial() (bool, string) {
	nfd, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Sprintf("(owner unknown: %v, so taken for the initial user namespace's)", err)
	}
	defer unix.Close(nfd)
	ufd, err := unix.IoctlRetInt(nfd, nsGetUserns)
	if err != nil {
		// EPERM: the owner is outside the probe's scope, a user namespace
		// above its own, maybe the initial one.
		return true, fmt.Sprintf("is owned by a user namespace above the probe's (NS_GET_USERNS: %s), maybe the initial one", errName(err))
	}
	defer unix.Close(ufd)
	var owner, self unix.Stat_t
	if err := unix.Fstat(ufd, &owner); err != nil {
		return true, fmt.Sprintf("(owner unknown: %v, so taken for the initial user namespace's)", err)
	}
	if err := unix.Stat("/proc/self/ns/user", &self); err != nil {
		return true, fmt.Sprintf("(own user namespace unknown: %v, so taken for the initial one)", err)
	}
	name := fmt.Sprintf("user:[%d]", owner.Ino)
	switch {
	case owner.Ino != self.Ino || owner.Dev != self.Dev:
		// In scope but not its own: a user namespace below the probe's,
		// which the initial one never is.
		return false, "is owned by " + name + ", a user namespace below the probe's"
	case initialUserNS():
		return true, "is owned by the initial user namespace (" + name + ")"
	}
	return false, "is owned by the machine's user namespace " + name + " (uid_map " +
		strings.Join(strings.Fields(readFile("/proc/self/uid_map")), " ") + "), not the initial one"
}

// listenUevents makes a tun link of the machine's own (gone with its fd) and
// reads what the bound socket fd gets for up to a second: the link's own
// uevent (tagged with the machine's network namespace) shows the socket
// receives, any uevent of a subsystem other than net is an untagged one of
// the host.
func listenUevents(fd int) (own string, foreign []string) {
	own = "no tun link to make"
	var link string
	if tfd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
		defer unix.Close(tfd)
		ifr, _ := unix.NewIfreq("bprobeu%d")
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(tfd, unix.TUNSETIFF, ifr); err != nil {
			own = "TUNSETIFF: " + errName(err)
		} else {
			link = ifr.Name()
			own = "the machine's own " + link + " made, its uevent did not arrive in a second"
		}
	} else {
		own = "no /dev/net/tun (" + errName(err) + ")"
	}
	deadline := time.Now().Add(time.Second)
	buf := make([]byte, 1<<16)
	seen := map[string]bool{}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			break
		}
		fields := strings.Split(string(buf[:n]), "\x00")
		env := map[string]string{}
		for _, f := range fields[1:] {
			if k, v, ok := strings.Cut(f, "="); ok {
				env[k] = v
			}
		}
		switch env["SUBSYSTEM"] {
		case "net", "queues":
			if link != "" && env["ACTION"] == "add" && strings.HasSuffix(env["DEVPATH"], "/net/"+link) {
				own = "the machine's own " + link + " made and its uevent arrived (tagged with this network namespace)"
				link = "" // seen; keep reading what else comes until the deadline
				deadline = time.Now().Add(100 * time.Millisecond)
			}
		default:
			if ev := fields[0]; !seen[ev] && len(foreign) < 4 {
				seen[ev] = true
				foreign = append(foreign, ev)
			}
		}
	}
	return own, foreign
}

// /proc and /sys.

// openProcFile opens p and says whether it is the kernel's own file (procfs)
// and not a mask over it.
func openProcFile(p string, flags int) (int, error) {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || st.Type != unix.PROC_SUPER_MAGIC {
		unix.Close(fd)
		return -1, noted(errors.New("masked"), fmt.Sprintf("%s is not procfs (type %#x)", p, st.Type))
	}
	return fd, nil
}

func trySysrq() (string, error) {
	fd, err := openProcFile("/proc/sysrq-trigger", unix.O_WRONLY)
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	return "the kernel's sysrq-trigger opened for writing (not written)", nil
}

func tryKcore() (string, error) {
	fd, err := openProcFile("/proc/kcore", unix.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	b := make([]byte, 64)
	if n, err := unix.Read(fd, b); err != nil || n == 0 {
		return "", noted(errors.New("empty"), fmt.Sprintf("read %d bytes, %v", n, err))
	}
	return "read the host's memory image", nil
}

func corePatternWritable(proc string) (string, error) {
	p := proc + "/sys/kernel/core_pattern"
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", noted(err, p)
	}
	unix.Close(fd)
	return p + " opened for writing (not written)", nil
}

func tryCorePattern() (string, error) { return corePatternWritable("/proc") }

func tryUeventHelper() (string, error) {
	fd, err := unix.Open("/sys/kernel/uevent_helper", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	return "opened for writing (not written)", nil
}

// thenWritable judges a step that worked (a mount, an unmount) by what it
// was for: a file of the host's kernel open for writing.
func thenWritable(step string, d string, err error) (string, error) {
	if err != nil {
		return "", noted(err, step+", but")
	}
	return step + "; " + d, nil
}

func tryUmountProcSys() (string, error) {
	return inPrivateMountNS(func() (string, error) {
		if err := unix.Unmount("/proc/sys", unix.MNT_DETACH); err != nil {
			return "", err
		}
		d, err := corePatternWritable("/proc")
		return thenWritable("/proc/sys unmounted", d, err)
	})
}

func tryRemountProcSys() (string, error) {
	return inPrivateMountNS(func() (string, error) {
		if err := unix.Mount("", "/proc/sys", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return "", err
		}
		d, err := corePatternWritable("/proc")
		return thenWritable("/proc/sys remounted read-write", d, err)
	})
}

func sysWritable(sys string) (string, error) {
	p := sys + "/kernel/profiling"
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", noted(err, p)
	}
	unix.Close(fd)
	return p + " opened for writing (not written)", nil
}

func tryRemountSys() (string, error) {
	ownNet, _ := os.Readlink("/proc/self/ns/net")
	sameNet := ownNet == os.Getenv("BERTH_PROBE_HOST_NETNS")
	return inPrivateMountNS(func() (string, error) {
		const keep = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
		if err := unix.Mount("", "/sys", "", unix.MS_REMOUNT|unix.MS_BIND|keep, ""); err != nil {
			return "", noted(err, "the mount")
		}
		step := "the /sys mount remounted read-write"
		if !sameNet {
			// The superblock too: it is the machine's own (sysfs has one per
			// network namespace) and is made read-only again below. Never
			// with the host's network namespace: that one is the host's.
			if err := unix.Mount("", "/sys", "", unix.MS_REMOUNT|keep, ""); err != nil {
				return thenWritable(step, "", noted(err, "remounting its superblock"))
			}
			d, err := sysWritable("/sys")
			if rerr := unix.Mount("", "/sys", "", unix.MS_REMOUNT|unix.MS_RDONLY|keep, ""); rerr != nil {
				d += "; MAKING THE SUPERBLOCK READ-ONLY AGAIN FAILED: " + errName(rerr)
			}
			return thenWritable(step+", and its superblock (made read-only again)", d, err)
		}
		d, err := sysWritable("/sys")
		return thenWritable(step, d, err)
	})
}

func tryMountProc() (string, error) {
	return inPrivateMountNS(func() (string, error) {
		dir, cleanup, err := tempDir("proc")
		if err != nil {
			return "", err
		}
		defer cleanup()
		if err := unix.Mount("proc", dir, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return "", err
		}
		d, err := corePatternWritable(dir)
		if err == nil {
			if fd, err := openProcFile(dir+"/sysrq-trigger", unix.O_WRONLY); err == nil {
				unix.Close(fd)
				d += ", sysrq-trigger too"
			}
		}
		return thenWritable("a new proc mounted", d, err)
	})
}

func tryMountSysfs() (string, error) {
	return inPrivateMountNS(func() (string, error) {
		dir, cleanup, err := tempDir("sysfs")
		if err != nil {
			return "", err
		}
		defer cleanup()
		if err := unix.Mount("sysfs", dir, "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return "", err
		}
		d, err := sysWritable(dir)
		return thenWritable("a new sysfs mounted", d, err)
	})
}

// tryMountFS mounts a filesystem of the host kernel's internals. debugfs and
// tracefs apply a new mount's options to their one superblock, so the probe
// passes the host's own (the test hands them over) and changes nothing.
func tryMountFS(fstype string) func() (string, error) {
	return func() (string, error) {
		return inPrivateMountNS(func() (string, error) {
			dir, cleanup, err := tempDir(fstype)
			if err != nil {
				return "", err
			}
			defer cleanup()
			if err := unix.Mount(fstype, dir, fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, os.Getenv("BERTH_PROBE_OPTS_"+fstype)); err != nil {
				return "", err
			}
			ents, _ := os.ReadDir(dir)
			var names []string
			for i, e := range ents {
				if i == 8 {
					names = append(names, "…")
					break
				}
				names = append(names, e.Name())
			}
			return fmt.Sprintf("the host kernel's %s, %d entries: %s", fstype, len(ents), strings.Join(names, " ")), nil
		})
	}
}

func tryBinfmt() (string, error) {
	initial := initialUserNS()
	return inPrivateMountNS(func() (string, error) {
		dir, cleanup, err := tempDir("binfmt")
		if err != nil {
			return "", err
		}
		defer cleanup()
		if err := unix.Mount("binfmt_misc", dir, "binfmt_misc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return "", err
		}
		// Since Linux 6.7 each user namespace mounts an instance of its own
		// (fs/binfmt_misc.c keys the superblock by the mounter's user
		// namespace), and an exec looks in its user namespace's instance,
		// then its parents', up to the initial one's: only that one applies
		// to the host's execs. The test holds the host's mounted and says
		// which superblock it is.
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return "", failf("stat the binfmt_misc mount: %v", err)
		}
		sb := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
		host := os.Getenv("BERTH_PROBE_HOST_BINFMT")
		which := "superblock " + sb
		switch {
		case host == sb:
			which += ", the host's instance's"
		case host != "":
			which += ", not the host's instance's (" + host + ")"
		}
		hosts := initial || host == sb
		reg := "register opened for writing (not written)"
		if fd, err := unix.Open(dir+"/register", unix.O_WRONLY|unix.O_CLOEXEC, 0); err != nil {
			if hosts {
				return thenWritable("binfmt_misc of the initial user namespace mounted ("+which+")", "", noted(err, "register"))
			}
			reg = "register: " + errName(err)
		} else {
			unix.Close(fd)
		}
		if !hosts {
			return "", noted(errors.New("own instance"), "binfmt_misc mounted: the machine's user namespace's own instance ("+which+"), "+
				reg+": what is registered there applies to execs in that user namespace only; the host's instance is not reachable")
		}
		return "binfmt_misc of the initial user namespace mounted (" + which + "), " + reg, nil
	})
}

func tryMountHostDisk() (string, error) {
	return inPrivateMountNS(func() (string, error) {
		name, maj, min := hostDisk()
		dir, cleanup, err := tempDir("disk")
		if err != nil {
			return "", err
		}
		defer cleanup()
		node := "/dev/" + name
		if _, err := os.Stat(node); err != nil {
			node = "/dev/berth-probe-root"
			_ = unix.Unlink(node)
			if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(maj, min))); err != nil {
				return "", noted(err, fmt.Sprintf("mknod b %d:%d (%s)", maj, min, name))
			}
			defer unix.Unlink(node)
		}
		fstype := "ext4"
		if _, types := mountsOf("ext4", "ext3", "ext2", "xfs", "btrfs"); len(types) > 0 {
			fstype = types[0]
		}
		// Read-write, or the kernel refuses to share the host's mounted
		// superblock; made read-only at once, then only listed.
		if err := unix.Mount(node, dir, fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			// The node exists: the device fences let it be made.
			return "a node of the host's " + name + " made; mount: " + errName(err) + hostDiskNote(), nil
		}
		_ = unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		ents, _ := os.ReadDir(dir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return "mounted the host's " + name + ": " + strings.Join(names, " "), nil
	})
}

// Cgroups.

// v1Hierarchies are the machine's v1 hierarchies as mount options.
func v1Hierarchies() []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(readFile("/proc/self/cgroup")), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 || parts[0] == "0" || parts[1] == "" {
			continue
		}
		if strings.HasPrefix(parts[1], "name=") {
			out = append(out, "none,"+parts[1])
		} else {
			out = append(out, parts[1])
		}
	}
	return out
}

// mountV1 mounts every v1 hierarchy under fresh directories (in the current,
// private mount namespace) and returns where.
func mountV1() (map[string]string, func()) {
	dirs := map[string]string{}
	var cleanups []func()
	for _, opt := range v1Hierarchies() {
		dir, cleanup, err := tempDir("cg")
		if err != nil {
			continue
		}
		cleanups = append(cleanups, cleanup)
		if err := unix.Mount("cgroup", dir, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opt); err == nil {
			dirs[opt] = dir
		}
	}
	return dirs, func() {
		for _, c := range cleanups {
			c()
		}
	}
}

func tryCgroupAbove() (string, error) {
	return inPrivateMountNS(func() (string, error) {
		var out []string
		for _, pid := range []string{"self", "1"} {
			for _, l := range strings.Split(readFile("/proc/"+pid+"/cgroup"), "\n") {
				if parts := strings.SplitN(l, ":", 3); len(parts) == 3 && strings.HasPrefix(parts[2], "/..") {
					out = append(out, "/proc/"+pid+"/cgroup "+l)
				}
			}
		}
		_, cleanup := mountV1()
		defer cleanup()
		for _, l := range strings.Split(readFile("/proc/thread-self/mountinfo"), "\n") {
			pre, post, ok := strings.Cut(l, " - ")
			f, p := strings.Fields(pre), strings.Fields(post)
			if ok && len(f) > 4 && len(p) > 0 && (p[0] == "cgroup" || p[0] == "cgroup2") && strings.HasPrefix(f[3], "/..") {
				out = append(out, "mount "+f[4]+" rooted at "+f[3])
			}
		}
		if len(out) > 0 {
			return strings.Join(out, ", "), nil
		}
		return "", noted(errors.New("none"), "every cgroup path and cgroup mount (v1 ones mounted for this) starts at the machine's cgroup namespace root")
	})
}

func tryOtherCgroups() (string, error) {
	other := os.Getenv("BERTH_PROBE_OTHER")
	if other == "" {
		return "", failf("no other machine named")
	}
	return inPrivateMountNS(func() (string, error) {
		dirs, cleanup := mountV1()
		defer cleanup()
		roots := []string{"/sys/fs/cgroup"}
		for _, d := range dirs {
			roots = append(roots, d)
		}
		var found []string
		scanned := 0
		for _, r := range roots {
			_ = filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.IsDir() {
					return nil
				}
				scanned++
				if strings.Count(strings.TrimPrefix(p, r), "/") > 6 {
					return filepath.SkipDir
				}
				if strings.Contains(d.Name(), other) {
					found = append(found, p)
				}
				return nil
			})
		}
		if len(found) > 0 {
			return strings.Join(found, ", "), nil
		}
		return "", noted(errors.New("none"), fmt.Sprintf("%d cgroups in %d hierarchies, none of %s", scanned, len(roots), other))
	})
}

// writeBack writes a cgroup file's value back unchanged: the kernel's check
// for release_agent is made at write time.
func writeBack(p string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write([]byte(strings.TrimSpace(string(b)) + "\n"))
	return err
}

func tryReleaseAgent() (string, error) {
	return inPrivateMountNS(func() (string, error) {
		dirs, cleanup := mountV1()
		defer cleanup()
		var notes []string
		for opt, d := range dirs {
			p := filepath.Join(d, "release_agent")
			if _, err := os.Stat(p); err != nil {
				continue
			}
			if err := writeBack(p); err != nil {
				notes = append(notes, opt+": "+errName(err))
				continue
			}
			return "release_agent of the " + opt + " hierarchy written (its value unchanged)", nil
		}
		notes = append(notes, fmt.Sprintf("no release_agent at the roots of %d v1 hierarchies (the machine's cgroup namespace)", len(dirs)))
		// A new hierarchy has its real root, and a release_agent there.
		dir, cleanupNew, err := tempDir("newcg")
		if err != nil {
			return "", err
		}
		defer cleanupNew()
		if err := unix.Mount("cgroup", dir, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "none,name=berth-escape-probe"); err != nil {
			return "", noted(err, strings.Join(notes, "; ")+"; a new hierarchy")
		}
		if err := writeBack(filepath.Join(dir, "release_agent")); err != nil {
			return "", noted(err, strings.Join(notes, "; ")+"; a new hierarchy mounted, its release_agent")
		}
		return "a new v1 hierarchy mounted and its release_agent written (unchanged)", nil
	})
}

// Terminals and the rest.

func tiocsti(fd int) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSTI, 0) // NULL: EFAULT once allowed, nothing typed
	return errnoOf(e)
}

func tryTIOCSTIConsole() (string, error) {
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", noted(err, "open /dev/console")
	}
	defer unix.Close(fd)
	if err := tiocsti(fd); !errors.Is(err, unix.EFAULT) {
		return reached(err)
	}
	return "TIOCSTI on /dev/console, the machine's own pty", nil
}

func tryTIOCSTIStdio() (string, error) {
	var pts unix.Stat_t
	_ = unix.Stat("/dev/pts/ptmx", &pts)
	var seen []string
	for fd := 0; fd <= 2; fd++ {
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Dev == pts.Dev {
			seen = append(seen, fmt.Sprintf("fd %d is a pty of the machine", fd))
			continue
		}
		if err := tiocsti(fd); errors.Is(err, unix.EFAULT) {
			return fmt.Sprintf("fd %d is a terminal of the host (%s) and takes TIOCSTI", fd, must(os.Readlink("/proc/self/fd/"+strconv.Itoa(fd)))), nil
		} else if err != nil {
			seen = append(seen, fmt.Sprintf("fd %d: %s", fd, errName(err)))
		}
	}
	if len(seen) == 0 {
		seen = append(seen, "no terminal among fds 0-2")
	}
	return "", noted(unix.ENOTTY, strings.Join(seen, ", "))
}

func tryPersonality() (string, error) {
	old, _, _ := unix.Syscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0)
	const perLinux32, addrNoRandomize = 0x0008, 0x0040000
	if _, _, e := unix.Syscall(unix.SYS_PERSONALITY, perLinux32|addrNoRandomize, 0, 0); e != 0 {
		return "", e
	}
	_, _, _ = unix.Syscall(unix.SYS_PERSONALITY, old, 0, 0)
	return fmt.Sprintf("PER_LINUX32|ADDR_NO_RANDOMIZE set, %#x restored", old), nil
}

func tryRealtime() (string, error) {
	return onThread(func() (string, error) {
		if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 1}, 0); err != nil {
			return "", err
		}
		_ = unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr}, 0)
		return "SCHED_FIFO priority 1 (set back)", nil
	})
}
