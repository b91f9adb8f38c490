package container_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
	"github.com/berthd/berth/spec"
)

// The escape suite: from inside a machine started with berth's defaults, as
// the machine's root, try what has let containers reach their host (runc's,
// LXC's, Docker's and nspawn's security history), and assert each outcome.
//
// The test binary is the probe: it is bound into the machine at /opt/probe and
// entered with _BERTH_STAGE=escape. It runs every attempt of escapeAttempts
// that runs inside and prints one line per attempt,
//
//	NAME: denied (ERRNO) -- detail
//	NAME: ALLOWED -- detail
//
// and the test compares them with the expectation of the machine's mode.
// Every attempt is harmless to the host even when it succeeds: it uses
// arguments the kernel rejects after its permission check (EINVAL, EBADF,
// ENOENT then mean "the call got through"), opens without writing, reads
// without changing, and undoes what it changed in the machine. Mounts are
// tried in a private mount namespace of one thread that ends with the attempt.

// expect is what a mode of machine must make of an attempt.
type expect int

const (
	// deny: the attempt must fail; the test fails when it is allowed.
	deny expect = iota
	// untilUsers: allowed while root in the machine is the host's root (no
	// user namespace); reported without failing. A user-namespaced machine
	// must deny it.
	untilUsers
	// harmless: allowed by design (or needed by guests) and no way out;
	// reported only.
	harmless
)

func (e expect) String() string {
	return [...]string{"deny", "until privateUsers", "harmless"}[e]
}

// The hardening that is expected to turn an allowed attempt into a denied one.
const (
	bySeccomp = "seccomp allow-list"        // nspawn's list (src/nspawn/nspawn-seccomp.c) with EPERM for the rest
	byFence   = "device fence above guest"  // the device policy on a cgroup the guest cannot write, without c 5:1
	byReaper  = "reaper drops capabilities" // application mode's PID 1 keeps no capability of the host's root
	byNoLeak  = "no fd leaks on enter"      // entered processes get fds 0-2 and nothing of the host
	byLimit   = "default task limit"        // pids.max on the machine's cgroup
	byUsers   = "privateUsers"              // a user namespace per machine
	byKernel  = "kernel / namespaces"       // denied today by capabilities, namespaces or masks; keep it so
	noFix     = "none planned"              // allowed today and in no plan: see the reason
	bySealed  = "read-only binary"          // stages run from a read-only, detached clone of berth's binary
)

// escapeAttempt is one row of the suite. try runs inside the machine (in the
// probe; inSelfExe: in the host's binary started through a guest file whose
// interpreter is /proc/self/exe); host runs in the test, outside.
type escapeAttempt struct {
	name      string
	try       func() (string, error)
	inSelfExe bool
	host      func(t *testing.T, m *escapeMachine) (string, error)
	boot, app expect
	users     expect // both modes with privateUsers (user-namespaced machines)
	fix       string
	why       string
}

// escapeAttempts is the suite, in the order the probe runs it.
var escapeAttempts = []escapeAttempt{
	// What the entered probe itself got: runs first, before the probe opens anything.
	{name: "enter_leaked_fds", try: tryLeakedFDs, boot: deny, app: deny, users: deny, fix: byNoLeak,
		why: "CVE-2024-21626 (runc): an fd of the host left open in an entered process (a cgroup dir, the host's /) is a way out through /proc/self/fd; the test itself holds a host directory without close-on-exec, as a shell or a careless library does"},
	{name: "enter_cwd_root_outside", try: tryCwdRoot, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "an entered process whose cwd or root is a directory of the host walks out with ../"},
	{name: "enter_caps_beyond_bounding", try: tryEnterCaps, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "an entered process must hold no capability outside the machine's bounding set (PID 1's CapBnd)"},

	// File handles and filesystem-wide watches.
	{name: "open_by_handle_at", try: tryShocker, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "Shocker (Docker 2014): a forged handle of inode 2 through any mount of a host filesystem (the bound probe binary) opens the host's /; CAP_DAC_READ_SEARCH and CAP_SYS_ADMIN pass the kernel's check, only a filter stops it"},
	{name: "fanotify_init", try: tryFanotifyInit, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "fanotify groups are not namespaced (nspawn's filter refuses fanotify_init)"},
	{name: "fanotify_mark_filesystem", try: tryFanotifyMarkFS, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "a FAN_MARK_FILESYSTEM mark on a host filesystem reports every open on the host, with an fd of each file"},

	// Kernel facilities that are not namespaced.
	{name: "keyctl_user_keyring", try: tryUserKeyring, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "keyrings are not namespaced: uid 0 in the machine shares the host root's user keyring (nspawn excludes @keyring)"},
	{name: "keyctl_session_keyring", try: trySessionKeyring, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "an entered process inherits the session keyring of whoever entered"},
	{name: "add_key", try: tryAddKey, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "adding keys to shared keyrings (tried with an empty type: EINVAL means the call got through)"},
	{name: "request_key", try: tryRequestKey, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "searching the shared keyrings; with a callout the kernel would run /sbin/request-key on the host (tried without one)"},
	{name: "perf_event_open", try: tryPerf, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "a system-wide event (pid -1, cpu 0) sees every process of the host; CAP_SYS_ADMIN passes perf_event_paranoid"},
	{name: "swapon", try: trySwapon, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "swap is host-wide (nspawn excludes @swap); on a missing path ENOENT means CAP_SYS_ADMIN let it through"},
	{name: "swapoff", try: trySwapoff, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "as swapon: turning off the host's swap"},
	{name: "bpf_prog_get_next_id", try: tryBPFNextID, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "bpf objects are not namespaced: the machine lists (and can take an fd of) every BPF program of the host"},
	{name: "bpf_detach_device_fence", try: tryBPFDetach, boot: deny, app: deny, users: deny, fix: bySeccomp + ", " + byFence,
		why: "BPF_PROG_QUERY and BPF_PROG_DETACH of the BPF_CGROUP_DEVICE program on the machine's own /sys/fs/cgroup take down the cgroup2 device fence (re-attached at once)"},

	// Device nodes and the device cgroup.
	{name: "device_cgroup_v1_allow", try: tryDevicesV1Allow, boot: deny, app: deny, users: deny, fix: byFence,
		why: "a v1 devices hierarchy mounted in the machine is rooted at the machine's own device cgroup: writing 'b *:* rwm' to its devices.allow lifts the v1 fence (undone at once)"},
	{name: "block_device_fences_down", try: tryBlockFencesDown, boot: deny, app: deny, users: deny, fix: byFence + ", " + bySeccomp,
		why: "both fences lifted from inside (the two attempts above), then a node of the host's disk and a read of its first sector; allowed once the node can be made, whatever refuses the open after the fences"},
	{name: "mknod_console_5_1", try: tryConsoleNode, boot: deny, app: deny, users: deny, fix: byFence,
		why: "c 5:1 is the host's kernel console, not the machine's (its /dev/console is a pty, c 136:N): it is in berth's device rules today"},
	{name: "mknod_block", try: tryMknodBlock, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "a node of the host's disk (major:minor from /proc/partitions): the device fences refuse to make it"},
	{name: "open_block_device", try: tryOpenBlock, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "any block device node already in the machine's /dev"},
	{name: "mknod_dev_mem", try: tryDevMem, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "c 1:1 /dev/mem: the host's physical memory"},
	{name: "dev_kmsg", try: tryKmsg, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "c 1:11 /dev/kmsg: the host's kernel log (nspawn does not link it to the console either)"},
	{name: "mknod_host_pty", try: tryHostPty, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "c 136:* is allowed for the machine's own ptys: a node of pty 0 outside a devpts must not reach the host's pty"},
	{name: "tun_device", try: tryTun, boot: harmless, app: harmless, users: harmless, fix: noFix,
		why: "a tun link lives in the machine's own network namespace (berthd allows /dev/net/tun, as nspawn's unit)"},

	// Capabilities berth drops from the bounding set.
	{name: "init_module", try: tryInitModule, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "loading a kernel module: no CAP_SYS_MODULE (ENOSYS on a kernel without modules)"},
	{name: "finit_module", try: tryFinitModule, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "as init_module, from an fd (-1: EBADF would mean the capability check passed)"},
	{name: "delete_module", try: tryDeleteModule, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "unloading a module of the host (a missing name: ENOENT would mean the check passed)"},
	{name: "kexec_load", try: tryKexecLoad, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "CAP_SYS_BOOT is in the bounding set (for reboot() in the PID namespace) and is all kexec_load checks: a crash kernel of the guest's choosing for the host (tried with bad flags)"},
	{name: "kexec_file_load", try: tryKexecFileLoad, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "as kexec_load, from a file"},
	{name: "iopl", try: tryIopl, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "raw I/O ports of the host: no CAP_SYS_RAWIO"},
	{name: "ioperm", try: tryIoperm, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "as iopl, one port"},
	{name: "clock_settime", try: tryClockSettime, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "the host's clock: no CAP_SYS_TIME (the kernel checks a time before the capability, so a bad time only shows a filter)"},
	{name: "settimeofday", try: trySettimeofday, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "the host's clock and timezone (an out-of-range timezone: EINVAL would mean CAP_SYS_TIME)"},
	{name: "adjtimex", try: tryAdjtimex, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "ADJ_OFFSET with a bad tick: EINVAL would mean the clock could be slewed"},
	{name: "reboot_cad_on", try: tryRebootCAD, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "reboot() in a PID namespace only ends the machine's init; LINUX_REBOOT_CMD_CAD_ON there is EINVAL (on the host it would change Ctrl-Alt-Del)"},
	{name: "acct", try: tryAcct, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "process accounting: no CAP_SYS_PACCT (a missing file: ENOENT would mean the check passed)"},
	{name: "syslog_read_all", try: trySyslog, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "the host's kernel log: CAP_SYSLOG is not in the set (and nspawn's filter allows syslog only with it)"},
	{name: "quotactl", try: tryQuotactl, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "quotas of host filesystems (nspawn's filter refuses quotactl; a missing device: ENOENT means it got through)"},
	{name: "lookup_dcookie", try: tryLookupDcookie, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "paths of the host's dentries by cookie (gone from Linux 6.8: ENOSYS)"},
	{name: "mmap_low_address", try: tryMmapLow, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "mapping page 0 (below vm.mmap_min_addr) turns kernel NULL dereferences into exploits: no CAP_SYS_RAWIO"},

	// PID 1 of the machine, and the host's binary.
	{name: "pid1_caps_beyond_bounding", try: tryPID1Caps, boot: deny, app: deny, users: deny, fix: byReaper,
		why: "a PID 1 holding capabilities outside the machine's bounding set (the bounding set only limits execs) can be ptraced by the machine's root (CAP_SYS_PTRACE) and made to use them: in application mode PID 1 is berth's reaper"},
	{name: "ptrace_pid1", try: tryPtracePID1, boot: harmless, app: harmless, users: harmless, fix: noFix,
		why: "root in the machine may trace its own PID 1 (gdb in the guest); harmless while PID 1 holds nothing more (see pid1_caps_beyond_bounding)"},
	{name: "proc1_mem_write", try: tryProc1Mem, boot: harmless, app: harmless, users: harmless, fix: noFix,
		why: "opening /proc/1/mem for writing: the same check as ptrace, the same reasoning (not written)"},
	{name: "pid1_host_files", try: tryPID1Files, boot: deny, app: deny, users: deny, fix: byNoLeak + " (into PID 1 too)",
		why: "an fd, cwd or root of PID 1 that is a file or directory of the host, reachable through /proc/1/fd, /proc/1/cwd, /proc/1/root: what the supervisor's caller left open, and in application mode what the reaper's own Go runtime opened before pivot_root (its cgroup CPU limit files)"},
	{name: "pid1_exe_host_binary", try: tryPID1Exe, boot: deny, app: deny, users: deny, fix: bySealed,
		why: "CVE-2019-5736 (runc): /proc/1/exe is the host's berth binary in application mode (the reaper is berth): it must be a file no one can write, not only one that is busy (ETXTBSY) while it runs"},
	{name: "pid1_exe_write", try: tryPID1ExeWrite, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "CVE-2019-5736: opening PID 1's executable for writing (not written)"},
	{name: "enter_exe_write", try: tryEnterExeWrite, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "CVE-2019-5736: the entered probe's own /proc/self/exe (the host's test binary, bound read-only) opened for writing"},
	{name: "enter_selfexe_host_binary", try: trySelfExeHost, inSelfExe: true, boot: deny, app: deny, users: deny, fix: bySealed,
		why: "CVE-2019-5736: a guest file with '#!/proc/self/exe' entered from outside runs the binary that forked it (the supervisor's) inside the machine: it must be a file no one can write, not only one that is busy (ETXTBSY)"},
	{name: "enter_selfexe_write", try: trySelfExeWrite, inSelfExe: true, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "CVE-2019-5736: that host binary opened for writing from inside (not written)"},

	// Namespaces.
	{name: "userfaultfd", try: tryUserfaultfd, boot: untilUsers, app: untilUsers, users: deny, fix: byUsers,
		why: "a kernel-exploit aid (freezes the kernel at a page fault); CAP_SYS_PTRACE passes vm.unprivileged_userfaultfd=0, in a user namespace it does not"},
	{name: "userns_create", try: tryUserns, boot: harmless, app: harmless, users: harmless, fix: noFix,
		why: "a user namespace of its own with uid 0 mapped gives nothing over the host (nspawn allows it)"},
	{name: "host_pids_visible", try: tryHostPIDs, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "any process of the host's PID namespace visible in /proc (to signal, trace or setns into)"},
	{name: "chroot_breakout", try: tryChroot, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "the classic chroot escape (chroot, cd .. past the root, chroot .): pivot_root and the detached old root leave nothing above the machine"},
	{name: "netlink_audit", try: tryAudit, boot: deny, app: deny, users: deny, fix: bySeccomp,
		why: "the audit subsystem is not namespaced (CAP_AUDIT_CONTROL is in the set); nspawn makes this socket EAFNOSUPPORT"},
	{name: "netlink_uevent", try: tryUevent, boot: untilUsers, app: untilUsers, users: deny, fix: byUsers,
		why: "the host's uevents (untagged: every device but a net device) are broadcast to every network namespace owned by the initial user namespace, and only to those (lib/kobject_uevent.c): binding works anywhere, so the probe asks NS_GET_USERNS who owns its network namespace and watches what arrives while it makes a tun link (its tagged uevent shows the socket receives; any other is the host's); a user-namespaced machine's network namespace is made by the same clone as its user namespace, which owns it"},

	// /proc and /sys.
	{name: "write_sysrq_trigger", try: trySysrq, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "/proc/sysrq-trigger of the host's kernel (masked; opened, not written)"},
	{name: "read_kcore", try: tryKcore, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "/proc/kcore is the host's memory (masked)"},
	{name: "write_core_pattern", try: tryCorePattern, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "core_pattern '|prog' runs prog as root on the host at the next crash (/proc/sys is read-only; opened, not written)"},
	{name: "write_uevent_helper", try: tryUeventHelper, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "/sys/kernel/uevent_helper runs on the host at every uevent (/sys is read-only)"},
	{name: "umount_proc_sys", try: tryUmountProcSys, boot: untilUsers, app: untilUsers, users: deny, fix: byUsers,
		why: "unmounting the read-only /proc/sys bind uncovers a writable /proc/sys (core_pattern); only mounts locked by a user namespace hold"},
	{name: "remount_proc_sys_rw", try: tryRemountProcSys, boot: untilUsers, app: untilUsers, users: deny, fix: byUsers,
		why: "remounting /proc/sys read-write, the same way out"},
	{name: "remount_sys_rw", try: tryRemountSys, boot: untilUsers, app: untilUsers, users: deny, fix: byUsers,
		why: "a read-write /sys: host-wide knobs under /sys/kernel, /sys/module, /sys/devices (restored read-only)"},
	{name: "mount_proc", try: tryMountProc, boot: untilUsers, app: untilUsers, users: deny, fix: byUsers,
		why: "a fresh proc mount has none of the masks and a writable /proc/sys"},
	{name: "mount_sysfs", try: tryMountSysfs, boot: untilUsers, app: untilUsers, users: deny, fix: byUsers,
		why: "a fresh sysfs mount to write host-wide knobs through (it shares the machine's read-only superblock, which only remount_sys_rw makes writable)"},
	{name: "mount_debugfs", try: tryMountFS("debugfs"), boot: untilUsers, app: untilUsers, users: deny, fix: byUsers,
		why: "debugfs is the host kernel's internals"},
	{name: "mount_tracefs", try: tryMountFS("tracefs"), boot: untilUsers, app: untilUsers, users: deny, fix: byUsers,
		why: "tracefs traces (and kprobes) the host's kernel"},
	{name: "mount_securityfs", try: tryMountFS("securityfs"), boot: untilUsers, app: untilUsers, users: deny, fix: byUsers,
		why: "securityfs holds the host's LSM and IMA policies"},
	{name: "mount_binfmt_misc", try: tryBinfmt, boot: untilUsers, app: untilUsers, users: deny, fix: byUsers,
		why: "binfmt_misc of the initial user namespace: an 'F' interpreter registered from inside runs for the host's own execs (register opened, not written). Since Linux 6.7 a user namespace mounts an instance of its own (fs/binfmt_misc.c keys the superblock by user namespace) that applies only to execs in it and below: the test holds the host's instance mounted, and a user-namespaced machine's mount must be another superblock (reported denied, with its own register writable)"},
	{name: "mount_host_disk", try: tryMountHostDisk, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "mounting the host's root block device (a node made for it)"},

	// Cgroups.
	{name: "cgroup_above_namespace", try: tryCgroupAbove, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "a cgroup path outside the machine's cgroup namespace (/.. in /proc/self/cgroup, /proc/1/cgroup or a cgroup mount's root): the way to the parent's cgroup.procs and limits"},
	{name: "other_machines_cgroups", try: tryOtherCgroups, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "another machine's cgroup (running beside this one) in any hierarchy the machine can mount"},
	{name: "cgroup_release_agent", try: tryReleaseAgent, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "CVE-2022-0492: a writable release_agent of a v1 hierarchy runs a program as root on the host (its value is written back unchanged)"},
	{name: "pids_limit", host: hostPidsLimit, boot: deny, app: deny, users: deny, fix: byLimit,
		why: "without pids.max on the machine's cgroup a fork bomb inside takes every PID of the host (berthd's default, spec.DefaultPidsMax, is what the test sets; `berth boot` and a container.Config without one set none)"},
	{name: "memory_limit", host: hostMemoryLimit, boot: harmless, app: harmless, users: harmless, fix: noFix,
		why: "no default memory limit: the machine can push the host into its OOM killer (reported only)"},
	{name: "mount_propagation_to_host", host: hostPropagation, boot: deny, app: deny, users: deny, fix: byKernel,
		why: "a mount of the machine in a peer group shared with the host: mounts made inside would appear on the host"},

	// Terminals and the rest.
	{name: "tiocsti_console", try: tryTIOCSTIConsole, boot: harmless, app: harmless, users: harmless, fix: noFix,
		why: "TIOCSTI on /dev/console pushes input into the machine's own pty, read only inside (tried with a NULL pointer: EFAULT means allowed)"},
	{name: "tiocsti_host_tty", try: tryTIOCSTIStdio, boot: deny, app: deny, users: deny, fix: byNoLeak,
		why: "a terminal of the host as fd 0-2 of an entered process: TIOCSTI types commands into the host's shell"},
	{name: "personality", try: tryPersonality, boot: harmless, app: harmless, users: harmless, fix: noFix,
		why: "PER_LINUX32|ADDR_NO_RANDOMIZE for itself (nspawn allows personality; restored)"},
	{name: "realtime_priority", try: tryRealtime, boot: harmless, app: harmless, users: harmless, fix: noFix,
		why: "SCHED_FIFO with CAP_SYS_NICE (in nspawn's set too): a busy loop would take up to 95 % of a host CPU; a v1 cpu cgroup without RT runtime refuses it (restored if allowed)"},
}

// escapeMode is one kind of machine the suite runs in.
type escapeMode struct {
	name         string
	boot         bool
	privateUsers bool
}

func (m escapeMode) expect(a escapeAttempt) expect {
	switch {
	case m.privateUsers:
		return a.users
	case m.boot:
		return a.boot
	}
	return a.app
}

// escapeUsersBase is the first host UID of the user-namespaced modes'
// ranges (one range of 65536 per mode, inside nspawn's pick range).
const escapeUsersBase = 0x5F000000

// escapeMachine is a machine of the suite and what the test knows of it.
type escapeMachine struct {
	mode escapeMode
	cfg  container.Config
	st   container.State
}

// TestEscape boots machines with berth's defaults and runs the escape suite
// in each: a booted Debian (systemd as PID 1) and an application (sleep under
// berth's reaper), side by side so each can look for the other's cgroups; then
// the same in user-namespaced machines once berth has them.
func TestEscape(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	t.Run("host users", func(t *testing.T) {
		runEscape(t, escapeMode{"boot", true, false}, escapeMode{"app", false, false})
	})
	t.Run("private users", func(t *testing.T) {
		runEscape(t, escapeMode{"boot-users", true, true}, escapeMode{"app-users", false, true})
	})
}

func runEscape(t *testing.T, modes ...escapeMode) {
	lower := testenv.DebianGuest(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A directory of the host held open without close-on-exec by the process
	// that starts and enters the machines, as a shell or a careless library
	// leaves fds to what it starts (runc's CVE-2024-21626 leaked one of
	// /sys/fs/cgroup): none of it may reach a machine.
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "only-on-the-host"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	leak, err := unix.Open(hostDir, unix.O_RDONLY|unix.O_DIRECTORY, 0) // no O_CLOEXEC, on purpose
	if err != nil {
		t.Fatal(err)
	}
	closeLeak := func() {
		if leak >= 0 {
			unix.Close(leak)
			leak = -1
		}
	}
	t.Cleanup(closeLeak)
	var ms []*escapeMachine
	for _, mode := range modes {
		// berth's defaults: what berthd makes of a definition that sets
		// nothing but its image (machined's containerConfig), under a
		// detached supervisor of its own, as berthd runs it.
		cfg := newConfig(t, "esc-"+mode.name)
		overlayRoot(t, &cfg, lower)
		cfg.Boot = mode.boot
		if !mode.boot {
			cfg.Args = []string{"/usr/bin/sleep", "3600"}
		}
		cfg.AllowTun = true
		cfg.Resources = container.Resources{PidsMax: spec.DefaultPidsMax}
		if mode.privateUsers {
			cfg.Users = &container.Users{Base: escapeUsersBase + uint32(len(ms))*65536}
		}
		cfg.Mounts = []container.Mount{{Type: "bind", Source: self, Target: "/opt/probe", ReadOnly: true}}
		em := &escapeMachine{mode: mode, cfg: cfg}
		if err := em.start(t); err != nil {
			if mode.privateUsers && strings.Contains(err.Error(), "not yet supported") {
				t.Skipf("user-namespaced machines are not supported yet: %v", err)
			}
			t.Fatalf("%s machine: %v", mode.name, err)
		}
		ms = append(ms, em)
	}
	for _, em := range ms {
		// A booted systemd reached READY=1.
		em.st = machinetest.WaitPhase(t, em.cfg.RuntimeDir, container.PhaseRunning, 1)
	}
	binfmt := holdHostBinfmt(t)
	for i, em := range ms {
		other := ms[(i+1)%len(ms)].cfg.Name
		t.Run(em.mode.name, func(t *testing.T) {
			res := runProbe(t, em, other, binfmt...)
			checkEscape(t, em, res)
		})
	}
	closeLeak()
	// Stop them cleanly and check that nothing stays behind.
	for _, em := range ms {
		if err := em.stop(false); err != nil {
			t.Errorf("%s: %v", em.mode.name, err)
		}
		if l := leaks(t, em.cfg); len(l) > 0 {
			t.Errorf("%s left behind:\n%s", em.mode.name, strings.Join(l, "\n"))
		}
	}
}

// start spawns the machine's detached supervisor; the machine is killed when
// the test ends, whatever happened.
func (em *escapeMachine) start(t *testing.T) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := container.SpawnDetached(ctx, em.cfg, "test-supervise"); err != nil {
		return err
	}
	t.Cleanup(func() {
		if err := em.stop(true); err != nil {
			t.Errorf("%s: %v", em.mode.name, err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(em.cfg.ConsoleLog)
			t.Logf("console log of %s:\n%s", em.cfg.Name, testenv.Tail(b, 2000))
		}
	})
	return nil
}

// stop powers the machine off (kill: kills everything in it) and waits until
// its supervisor is gone. A machine already gone is stopped.
func (em *escapeMachine) stop(kill bool) error {
	st, err := container.ReadState(em.cfg.RuntimeDir)
	if err != nil || !st.SupervisorAlive() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := container.Dial(em.cfg.RuntimeDir)
	if err != nil {
		return err
	}
	if kill {
		err = c.Kill(ctx, unix.SIGKILL, "all")
	} else {
		err = c.Poweroff(ctx)
	}
	if err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if _, err := c.Wait(ctx); err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	return container.WaitSupervisorGone(ctx, em.cfg.RuntimeDir, 15*time.Second)
}

// escapeResult is one attempt's outcome as the probe printed it.
type escapeResult struct {
	allowed bool
	failed  bool // the attempt could not be made
	reason  string
	detail  string
}

func (r escapeResult) String() string {
	s := "denied (" + r.reason + ")"
	switch {
	case r.failed:
		s = "FAILED (" + r.reason + ")"
	case r.allowed:
		s = "ALLOWED"
	}
	if r.detail != "" {
		s += " -- " + r.detail
	}
	return s
}

var escapeLine = regexp.MustCompile(`^([a-z0-9_]+): (ALLOWED|denied|FAILED)(?: \((.*?)\))?(?: -- (.*))?$`)

func parseEscape(out string) map[string]escapeResult {
	res := map[string]escapeResult{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := escapeLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		res[m[1]] = escapeResult{allowed: m[2] == "ALLOWED", failed: m[2] == "FAILED", reason: m[3], detail: m[4]}
	}
	return res
}

// runProbe runs the suite in the machine: the probe entered as the machine's
// root, then a guest file with '#!/proc/self/exe' entered from outside (the
// probe plants it), then the checks made from the host.
func runProbe(t *testing.T, em *escapeMachine, other string, hostEnv ...string) map[string]escapeResult {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env := append(probeHostEnv(t), "_BERTH_STAGE=escape", "BERTH_PROBE_OTHER="+other)
	env = append(env, hostEnv...)
	var out bytes.Buffer
	t0 := time.Now()
	code, err := container.Enter(ctx, em.cfg.RuntimeDir, container.EnterOptions{
		Command: []string{"/opt/probe", "probe"}, Env: env, Stdout: &out, Stderr: &out})
	if err != nil || code != 0 {
		t.Fatalf("probe: exit %d, %v:\n%s", code, err, out.String())
	}
	t.Logf("probe (%v):\n%s", time.Since(t0).Round(time.Millisecond), out.String())
	res := parseEscape(out.String())

	var se bytes.Buffer
	code, err = container.Enter(ctx, em.cfg.RuntimeDir, container.EnterOptions{
		Command: []string{selfExeScript, "selfexe"}, Env: env, Stdout: &se, Stderr: &se})
	t.Logf("%s (exit %d, %v):\n%s", selfExeScript, code, err, se.String())
	for name, r := range parseEscape(se.String()) {
		res[name] = r
	}
	for _, a := range escapeAttempts {
		if a.inSelfExe && res[a.name] == (escapeResult{}) {
			// The host's binary did not run inside: nothing to write.
			res[a.name] = escapeResult{reason: fmt.Sprintf("exit %d, %v", code, err), detail: "the script did not run the host's binary"}
		}
		if a.host != nil {
			d, err := a.host(t, em)
			res[a.name] = outcome(d, err)
		}
	}
	return res
}

// probeHostEnv tells the probe what the host's namespaces and keyrings are,
// so it can tell the host's from the machine's (and refuse to run on the
// host), and the host's superblock options of debugfs and tracefs, which a
// new mount of them applies again to their one superblock.
func probeHostEnv(t *testing.T) []string {
	var env []string
	for _, ns := range []string{"pid", "mnt", "net", "cgroup", "user"} {
		l, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, "BERTH_PROBE_HOST_"+strings.ToUpper(ns)+"NS="+l)
	}
	for name, ring := range map[string]int{"USER": unix.KEY_SPEC_USER_KEYRING, "SESSION": unix.KEY_SPEC_SESSION_KEYRING} {
		if id, err := unix.KeyctlGetKeyringID(ring, false); err == nil {
			env = append(env, "BERTH_PROBE_HOST_"+name+"_KEYRING="+strconv.Itoa(id))
		}
	}
	// Whether the host's own root may read its disk: a host that is itself
	// confined refuses it to everyone, so only making the node tells of the
	// machine's fences.
	disk := "ok"
	if f, err := os.Open(hostDiskPath()); err != nil {
		var e unix.Errno
		if errors.As(err, &e) {
			disk = unix.ErrnoName(e)
		} else {
			disk = err.Error()
		}
	} else {
		f.Close()
	}
	env = append(env, "BERTH_PROBE_HOST_DISK="+disk)
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		_, post, ok := strings.Cut(l, " - ")
		p := strings.Fields(post)
		if !ok || len(p) < 3 || (p[0] != "debugfs" && p[0] != "tracefs") {
			continue
		}
		var keep []string
		for _, o := range strings.Split(p[2], ",") {
			if strings.HasPrefix(o, "mode=") || strings.HasPrefix(o, "uid=") || strings.HasPrefix(o, "gid=") {
				keep = append(keep, o)
			}
		}
		env = append(env, "BERTH_PROBE_OPTS_"+p[0]+"="+strings.Join(keep, ","))
	}
	return env
}

// holdHostBinfmt mounts the host's binfmt_misc (the initial user
// namespace's instance) in a private mount namespace of a thread of its own,
// held until the test ends, and returns its superblock for the probe
// (BERTH_PROBE_HOST_BINFMT): the probe tells by it whether the instance it
// mounts is the host's or one of the machine's own. A host that has it
// mounted already shares that superblock; one that has not gets nothing new
// that outlives the test (the instance's entries go with its last mount).
func holdHostBinfmt(t *testing.T) []string {
	dir := t.TempDir()
	type held struct {
		dev string
		err error
	}
	got, release, gone := make(chan held, 1), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(gone)
		// Never unlocked: the thread ends with the goroutine, and its mount
		// namespace with it.
		runtime.LockOSThread()
		got <- func() held {
			if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
				return held{err: err}
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return held{err: err}
			}
			if err := unix.Mount("binfmt_misc", dir, "binfmt_misc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
				return held{err: err}
			}
			var st unix.Stat_t
			if err := unix.Stat(dir, &st); err != nil {
				return held{err: err}
			}
			return held{dev: fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))}
		}()
		<-release
	}()
	t.Cleanup(func() { close(release); <-gone })
	h := <-got
	if h.err != nil {
		t.Logf("the host's binfmt_misc: %v (the probe judges by its user namespace alone)", h.err)
		return nil
	}
	return []string{"BERTH_PROBE_HOST_BINFMT=" + h.dev}
}

// hostDiskPath is the host's node of the disk the probe makes a node of.
func hostDiskPath() string {
	b, _ := os.ReadFile("/proc/partitions")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] != "major" && !strings.HasPrefix(f[3], "loop") && !strings.HasPrefix(f[3], "ram") {
			return "/dev/" + f[3]
		}
	}
	return "/dev/loop0"
}

// checkEscape compares the outcomes with the mode's expectations and logs the
// whole table.
func checkEscape(t *testing.T, em *escapeMachine, res map[string]escapeResult) {
	var tab strings.Builder
	fmt.Fprintf(&tab, "%-28s %-9s %-19s %s\n", "attempt", "today", "expected", "result")
	allowed, denied := 0, 0
	for _, a := range escapeAttempts {
		r, ok := res[a.name]
		want := em.mode.expect(a)
		today := "denied"
		switch {
		case !ok:
			t.Errorf("%s: no result from the probe", a.name)
			continue
		case r.failed:
			t.Errorf("%s: the attempt could not be made: %s", a.name, r)
			today = "FAILED"
		case r.allowed:
			today = "ALLOWED"
			allowed++
			if want == deny {
				t.Errorf("%s: ALLOWED, must be denied (%s; fix: %s) -- %s", a.name, a.why, a.fix, r.detail)
			}
		default:
			denied++
		}
		fmt.Fprintf(&tab, "%-28s %-9s %-19s %s\n", a.name, today, want, r)
	}
	t.Logf("%s machine: %d denied, %d allowed of %d attempts\n%s", em.mode.name, denied, allowed, len(escapeAttempts), tab.String())
}

// Host-side checks.

func hostPidsLimit(t *testing.T, em *escapeMachine) (string, error) {
	v := testenv.CgroupLimit(t, em.st.CgroupPath, "pids")
	if v == "max" || v == "-1" {
		return "pids.max of " + em.st.CgroupPath + " is " + v, nil
	}
	return "", noted(errors.New("limited"), "pids.max "+v)
}

func hostMemoryLimit(t *testing.T, em *escapeMachine) (string, error) {
	v := testenv.CgroupLimit(t, em.st.CgroupPath, "memory")
	if n, err := strconv.ParseInt(v, 10, 64); v == "max" || v == "-1" || (err == nil && n >= 1<<62) {
		return "memory limit of " + em.st.CgroupPath + ": " + v, nil
	}
	return "", noted(errors.New("limited"), v)
}

// hostPropagation compares the peer groups of the machine's mounts with the
// host's: a shared peer group in both would carry mounts out.
func hostPropagation(t *testing.T, em *escapeMachine) (string, error) {
	peers := func(path string) map[string]string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			for _, x := range f {
				if strings.HasPrefix(x, "shared:") && len(f) > 4 {
					out[x] = f[4]
				}
			}
		}
		return out
	}
	host := peers("/proc/self/mountinfo")
	var both []string
	for id, mp := range peers("/proc/" + strconv.Itoa(em.st.LeaderPID) + "/mountinfo") {
		if hmp, ok := host[id]; ok {
			both = append(both, fmt.Sprintf("%s (%s inside, %s on the host)", id, mp, hmp))
		}
	}
	if len(both) > 0 {
		return strings.Join(both, ", "), nil
	}
	return "", noted(errors.New("no shared peer group"), "the machine's mounts share no peer group with the host's")
}
