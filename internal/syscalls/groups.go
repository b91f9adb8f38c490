package syscalls

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// A Group is a named set of system calls, as systemd names them in
// SystemCallFilter= (src/shared/seccomp-util.c, v260): "@file-system" and so
// on. A name that does not exist on an architecture is skipped there.
type Group struct {
	Name    string
	Why     string
	Members []string
}

// Groups are systemd's groups (the ones nspawn's filter uses, and the ones it
// leaves out on purpose), plus berth's own "@default-new" and "@io-uring",
// with the members that exist on the architectures berth filters (x86_64,
// i386, aarch64, arm).
var Groups = []Group{
	{"@default", "process basics every program needs: exec and exit, memory, futexes, identity, clocks, restartable sequences, self-sandboxing (landlock, seccomp)", []string{
		"arch_prctl", "brk", "cacheflush", "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
		"clock_nanosleep", "clock_nanosleep_time64", "execve", "exit", "exit_group", "futex", "futex_time64", "futex_waitv",
		"get_robust_list", "get_thread_area", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
		"getgroups", "getgroups32", "getpgid", "getpgrp", "getpid", "getppid", "getrandom", "getresgid", "getresgid32",
		"getresuid", "getresuid32", "getrlimit", "getsid", "gettid", "gettimeofday", "getuid", "getuid32",
		"landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lsm_get_self_attr", "lsm_list_modules",
		"membarrier", "mmap", "mmap2", "mprotect", "mseal", "munmap", "nanosleep", "pause", "prlimit64", "restart_syscall",
		"rseq", "rt_sigreturn", "sched_getaffinity", "sched_yield", "seccomp",
		"set_robust_list", "set_thread_area", "set_tid_address", "set_tls", "sigreturn", "time", "ugetrlimit", "uretprobe",
	}},
	{"@default-new", "newer unprivileged calls systemd has not grouped yet: futex2, shadow stacks (glibc with CET), the uprobe trampoline (a host-side probe must not crash the guest), reaping a process the caller killed, the caller's own LSM attributes", []string{
		"futex_requeue", "futex_wait", "futex_wake", "map_shadow_stack", "uprobe", "process_mrelease", "lsm_set_self_attr",
	}},
	{"@aio", "POSIX asynchronous I/O and io_uring (berth's default list leaves io_uring out: see @io-uring)", []string{
		"io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit",
		"io_uring_enter", "io_uring_register", "io_uring_setup",
	}},
	{"@io-uring", "io_uring: a large kernel surface with a long record of privilege escalations; no system service of a Debian guest needs it (Docker refuses it too)", []string{
		"io_uring_enter", "io_uring_register", "io_uring_setup",
	}},
	{"@basic-io", "reading, writing, seeking and closing file descriptors", []string{
		"_llseek", "close", "close_range", "dup", "dup2", "dup3", "lseek", "pread64", "preadv", "preadv2",
		"pwrite64", "pwritev", "pwritev2", "read", "readv", "write", "writev",
	}},
	{"@chown", "changing owners (the kernel still checks CAP_CHOWN)", []string{
		"chown", "chown32", "fchown", "fchown32", "fchownat", "lchown", "lchown32",
	}},
	{"@file-system", "file and directory operations, stat, extended attributes, inotify, statmount and listmount", []string{
		"access", "chdir", "chmod", "close", "creat", "faccessat", "faccessat2", "fallocate", "fchdir", "fchmod", "fchmodat",
		"fchmodat2", "fcntl", "fcntl64", "fgetxattr", "file_getattr", "file_setattr", "flistxattr", "fremovexattr",
		"fsetxattr", "fstat", "fstat64", "fstatat", "fstatat64", "fstatfs", "fstatfs64", "ftruncate", "ftruncate64",
		"futimesat", "getcwd", "getdents", "getdents64", "getxattr", "getxattrat", "inotify_add_watch", "inotify_init",
		"inotify_init1", "inotify_rm_watch", "lgetxattr", "link", "linkat", "listmount", "listxattr", "listxattrat",
		"llistxattr", "lremovexattr", "lsetxattr", "lstat", "lstat64", "mkdir", "mkdirat", "mknod", "mknodat",
		"newfstatat", "oldfstat", "oldlstat", "oldstat", "open", "open_tree", "openat", "openat2", "readlink", "readlinkat",
		"removexattr", "removexattrat", "rename", "renameat", "renameat2", "rmdir", "setxattr", "setxattrat", "stat",
		"stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat", "truncate", "truncate64", "unlink",
		"unlinkat", "utime", "utimensat", "utimensat_time64", "utimes",
	}},
	{"@io-event", "event loops: poll, select, epoll, eventfd", []string{
		"_newselect", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
		"epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "poll", "ppoll", "ppoll_time64", "pselect6",
		"pselect6_time64", "select",
	}},
	{"@ipc", "SysV and POSIX IPC, pipes, memfd, process_vm_* (the kernel applies the ptrace access check)", []string{
		"ipc", "memfd_create", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
		"mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd", "pipe", "pipe2",
		"process_madvise", "process_vm_readv", "process_vm_writev", "semctl", "semget", "semop", "semtimedop",
		"semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
	}},
	{"@keyring", "kernel keyrings: namespaced per user namespace only, so without one the machine's root shares the host root's keyrings", []string{
		"add_key", "keyctl", "request_key",
	}},
	{"@mount", "mounting: a booted guest's systemd builds mount namespaces for its services; its own mount namespace and capabilities contain it", []string{
		"chroot", "fsconfig", "fsmount", "fsopen", "fspick", "mount", "mount_setattr", "move_mount", "open_tree_attr",
		"pivot_root", "umount", "umount2",
	}},
	{"@network-io", "sockets (socket(AF_NETLINK, NETLINK_AUDIT) answers EAFNOSUPPORT, as under nspawn: audit does not work in containers)", []string{
		"accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen", "recv", "recvfrom",
		"recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown",
		"socket", "socketcall", "socketpair",
	}},
	{"@process", "processes, execution and namespaces: systemd and its services make namespaces of their own", []string{
		"capget", "clone", "clone3", "execveat", "fork", "getrusage", "kill", "pidfd_open", "pidfd_send_signal", "prctl",
		"rt_sigqueueinfo", "rt_tgsigqueueinfo", "setns", "tgkill", "times", "tkill", "unshare", "vfork",
		"wait4", "waitid", "waitpid",
	}},
	{"@resources", "limits, priorities, scheduling and NUMA policy (the kernel checks CAP_SYS_NICE and CAP_SYS_RESOURCE)", []string{
		"ioprio_set", "mbind", "migrate_pages", "move_pages", "nice", "sched_setaffinity", "sched_setattr",
		"sched_setparam", "sched_setscheduler", "set_mempolicy", "set_mempolicy_home_node", "setpriority", "setrlimit",
	}},
	{"@setuid", "changing users and groups (the kernel checks CAP_SETUID and CAP_SETGID)", []string{
		"setgid", "setgid32", "setgroups", "setgroups32", "setregid", "setregid32", "setresgid", "setresgid32",
		"setresuid", "setresuid32", "setreuid", "setreuid32", "setuid", "setuid32",
	}},
	{"@signal", "signal handlers and masks", []string{
		"rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
		"sigaction", "sigaltstack", "signal", "signalfd", "signalfd4", "sigpending", "sigprocmask", "sigsuspend",
	}},
	{"@sync", "flushing files and memory to storage", []string{
		"fdatasync", "fsync", "msync", "sync", "sync_file_range", "syncfs",
	}},
	{"@timer", "alarms, interval timers, POSIX timers, timerfd", []string{
		"alarm", "getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
		"timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
		"timerfd_settime", "timerfd_settime64", "times",
	}},
	{"@pkey", "memory protection keys: on the caller's own memory only", []string{
		"pkey_alloc", "pkey_free", "pkey_mprotect",
	}},
	{"@memlock", "locking memory: without CAP_IPC_LOCK the kernel still caps it at RLIMIT_MEMLOCK (gpg-agent, cryptsetup)", []string{
		"mlock", "mlock2", "mlockall", "munlock", "munlockall",
	}},
	{"@clock", "setting the system clock: the realtime clock is the host's (time namespaces cover only the monotonic clocks)", []string{
		"adjtimex", "clock_adjtime", "clock_adjtime64", "clock_settime", "clock_settime64", "settimeofday",
	}},
	{"@module", "loading and unloading kernel modules: the host's kernel", []string{
		"delete_module", "finit_module", "init_module",
	}},
	{"@raw-io", "raw I/O port and PCI config access: the host's hardware", []string{
		"ioperm", "iopl", "pciconfig_iobase", "pciconfig_read", "pciconfig_write",
	}},
	{"@swap", "swap devices: host-wide, and needing only CAP_SYS_ADMIN", []string{
		"swapoff", "swapon",
	}},
	{"@reboot", "rebooting and kexec (reboot(2) in a machine only ends its PID namespace; kexec would replace the host's kernel)", []string{
		"kexec_file_load", "kexec_load", "reboot",
	}},
	{"@debug", "debugging, tracing and performance monitoring", []string{
		"lookup_dcookie", "perf_event_open", "pidfd_getfd", "ptrace",
	}},
	{"@cpu-emulation", "CPU emulation (LDT, vm86): a historical source of kernel bugs", []string{
		"modify_ldt", "vm86", "vm86old",
	}},
	{"@obsolete", "unusual, obsolete or unimplemented calls: attack surface only", []string{
		"_sysctl", "afs_syscall", "bdflush", "break", "create_module", "ftime", "get_kernel_syms", "getpmsg", "gtty", "idle",
		"lock", "mpx", "prof", "profil", "putpmsg", "query_module", "security", "sgetmask", "ssetmask", "stime", "stty",
		"sysfs", "tuxcall", "ulimit", "uselib", "ustat", "vserver",
	}},
}

// Extra is nspawn's list of single calls allowed besides its groups (the ones
// of systemd's @system-service that no group above has), plus the few
// nspawn's own start needs.
var Extra = []string{
	"cachestat", "capset", "copy_file_range", "fadvise64", "fadvise64_64", "arm_fadvise64_64", "flock", "get_mempolicy",
	"getcpu", "getpriority", "ioctl", "ioprio_get", "kcmp", "madvise", "mincore", "mremap", "name_to_handle_at",
	"oldolduname", "olduname", "personality", "readahead", "readdir", "remap_file_pages", "sched_get_priority_max",
	"sched_get_priority_min", "sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
	"sched_rr_get_interval_time64", "sendfile", "sendfile64", "setdomainname", "setfsgid", "setfsgid32", "setfsuid",
	"setfsuid32", "sethostname", "setpgid", "setsid", "splice", "sysinfo", "tee", "umask", "uname", "vmsplice",
}

// Default is berth's allow-list for every machine, before capabilities and
// the definition's systemCallFilter: nspawn's (systemd v260), with the
// changes docs/runtime.md explains. Entries are groups, names, and "~" for a
// refusal applied after them.
var Default = []string{
	"@default", "@default-new", "@aio", "~@io-uring", "@basic-io", "@chown", "@file-system", "@io-event", "@ipc",
	"@mount", "@network-io", "@process", "@resources", "@setuid", "@signal", "@sync", "@timer", "@pkey", "@memlock",
	"@extra",
}

// ByCapability are the calls that come back when the machine keeps a
// capability (in its bounding set): nspawn's table, and CAP_PERFMON for
// perf_event_open and CAP_BPF for bpf() as the capabilities that govern them.
var ByCapability = []struct {
	Cap     string // CAP_SYS_TIME
	Entries []string
}{
	{"CAP_SYS_TIME", []string{"@clock"}},
	{"CAP_SYS_MODULE", []string{"@module"}},
	{"CAP_SYS_RAWIO", []string{"@raw-io"}},
	{"CAP_SYS_PACCT", []string{"acct"}},
	{"CAP_SYS_PTRACE", []string{"ptrace"}},
	{"CAP_SYS_BOOT", []string{"reboot"}},
	{"CAP_SYSLOG", []string{"syslog"}},
	{"CAP_SYS_TTY_CONFIG", []string{"vhangup"}},
	{"CAP_BPF", []string{"bpf"}},
	{"CAP_PERFMON", []string{"perf_event_open"}},
}

// Never are refused whatever the capabilities, unless a definition names
// them in systemCallFilter; each with the reason.
var Never = []struct{ Name, Why string }{
	{"open_by_handle_at", `opens any inode of a host filesystem by its handle, outside the machine's root (the "shocker" escape; CAP_DAC_READ_SEARCH is kept, as under nspawn)`},
	{"@keyring", "the host root's keyrings, until the machine has a user namespace of its own"},
	{"@swap", "host-wide swap devices"},
	{"kexec_load", "would replace the host's kernel"},
	{"kexec_file_load", "would replace the host's kernel"},
	{"fanotify_init", "filesystem-wide marks see and open files host processes use"},
	{"fanotify_mark", "filesystem-wide marks see and open files host processes use"},
	{"quotactl", "host filesystem quotas"},
	{"quotactl_fd", "host filesystem quotas"},
	{"nfsservctl", "removed kernel NFS server control"},
	{"lookup_dcookie", "kernel profiling cookies"},
	{"pidfd_getfd", "takes file descriptors out of another process"},
	{"userfaultfd", "a favourite of kernel exploits for widening races; no guest service needs it"},
	{"@io-uring", "see its group"},
	{"memfd_secret", "takes memory out of the kernel's direct map; nothing in an OS container needs it"},
	{"@cpu-emulation", "see its group"},
	{"@obsolete", "see its group"},
}

func groupByName(name string) *Group {
	for i := range Groups {
		if Groups[i].Name == name {
			return &Groups[i]
		}
	}
	return nil
}

// GroupNames lists every group name a definition may use.
func GroupNames() []string {
	out := []string{"@extra"}
	for _, g := range Groups {
		out = append(out, g.Name)
	}
	sort.Strings(out)
	return out
}

// Expand resolves one entry (a name or an @group, without "~") into names.
func Expand(entry string) ([]string, error) {
	if entry == "@extra" {
		return Extra, nil
	}
	if strings.HasPrefix(entry, "@") {
		g := groupByName(entry)
		if g == nil {
			return nil, fmt.Errorf("%s is not a system call group (one of %s)", entry, strings.Join(GroupNames(), ", "))
		}
		return g.Members, nil
	}
	if !Known(entry) {
		return nil, fmt.Errorf("%s is not a system call of any architecture berth filters", entry)
	}
	return []string{entry}, nil
}

// Known reports whether name is a system call of any architecture berth
// filters.
func Known(name string) bool {
	for _, t := range Tables {
		if t.Number(name) >= 0 {
			return true
		}
	}
	return false
}

// CheckEntry validates one systemCallFilter entry ("name", "@group", "~…").
func CheckEntry(e string) error {
	_, err := Expand(strings.TrimPrefix(e, "~"))
	return err
}

// Resolve computes the set of allowed names for a machine: the default list,
// the calls of the capabilities it keeps (caps holds canonical names such as
// "CAP_SYS_TIME"), then the definition's own entries, in order. Deny entries
// remove; allow entries add.
func Resolve(caps []string, filter []string) (map[string]bool, error) {
	allowed := map[string]bool{}
	apply := func(e string) error {
		deny := strings.HasPrefix(e, "~")
		names, err := Expand(strings.TrimPrefix(e, "~"))
		if err != nil {
			return err
		}
		for _, n := range names {
			if deny {
				delete(allowed, n)
			} else {
				allowed[n] = true
			}
		}
		return nil
	}
	for _, e := range Default {
		if err := apply(e); err != nil {
			return nil, fmt.Errorf("berth's default list: %w", err)
		}
	}
	for _, c := range ByCapability {
		if slices.Contains(caps, c.Cap) {
			for _, e := range c.Entries {
				if err := apply(e); err != nil {
					return nil, err
				}
			}
		}
	}
	for _, e := range filter {
		if err := apply(e); err != nil {
			return nil, fmt.Errorf("systemCallFilter %q: %w", e, err)
		}
	}
	return allowed, nil
}
