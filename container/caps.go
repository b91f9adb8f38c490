package container

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// defaultCaps is systemd-nspawn's default bounding set for a machine without a
// user namespace; CAP_NET_ADMIN is added when the machine has its own network
// namespace (nspawn does the same with --private-network).
var defaultCaps = []int{
	unix.CAP_AUDIT_CONTROL, unix.CAP_AUDIT_WRITE, unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE,
	unix.CAP_DAC_READ_SEARCH, unix.CAP_FOWNER, unix.CAP_FSETID, unix.CAP_IPC_OWNER,
	unix.CAP_KILL, unix.CAP_LEASE, unix.CAP_LINUX_IMMUTABLE, unix.CAP_MKNOD,
	unix.CAP_NET_BIND_SERVICE, unix.CAP_NET_BROADCAST, unix.CAP_NET_RAW, unix.CAP_SETFCAP,
	unix.CAP_SETGID, unix.CAP_SETPCAP, unix.CAP_SETUID, unix.CAP_SYS_ADMIN,
	unix.CAP_SYS_BOOT, unix.CAP_SYS_CHROOT, unix.CAP_SYS_NICE, unix.CAP_SYS_PTRACE,
	unix.CAP_SYS_RESOURCE, unix.CAP_SYS_TTY_CONFIG,
}

var capNames = map[string]int{
	"chown": unix.CAP_CHOWN, "dac_override": unix.CAP_DAC_OVERRIDE, "dac_read_search": unix.CAP_DAC_READ_SEARCH,
	"fowner": unix.CAP_FOWNER, "fsetid": unix.CAP_FSETID, "kill": unix.CAP_KILL, "setgid": unix.CAP_SETGID,
	"setuid": unix.CAP_SETUID, "setpcap": unix.CAP_SETPCAP, "linux_immutable": unix.CAP_LINUX_IMMUTABLE,
	"net_bind_service": unix.CAP_NET_BIND_SERVICE, "net_broadcast": unix.CAP_NET_BROADCAST,
	"net_admin": unix.CAP_NET_ADMIN, "net_raw": unix.CAP_NET_RAW, "ipc_lock": unix.CAP_IPC_LOCK,
	"ipc_owner": unix.CAP_IPC_OWNER, "sys_module": unix.CAP_SYS_MODULE, "sys_rawio": unix.CAP_SYS_RAWIO,
	"sys_chroot": unix.CAP_SYS_CHROOT, "sys_ptrace": unix.CAP_SYS_PTRACE, "sys_pacct": unix.CAP_SYS_PACCT,
	"sys_admin": unix.CAP_SYS_ADMIN, "sys_boot": unix.CAP_SYS_BOOT, "sys_nice": unix.CAP_SYS_NICE,
	"sys_resource": unix.CAP_SYS_RESOURCE, "sys_time": unix.CAP_SYS_TIME, "sys_tty_config": unix.CAP_SYS_TTY_CONFIG,
	"mknod": unix.CAP_MKNOD, "lease": unix.CAP_LEASE, "audit_write": unix.CAP_AUDIT_WRITE,
	"audit_control": unix.CAP_AUDIT_CONTROL, "setfcap": unix.CAP_SETFCAP, "mac_override": unix.CAP_MAC_OVERRIDE,
	"mac_admin": unix.CAP_MAC_ADMIN, "syslog": unix.CAP_SYSLOG, "wake_alarm": unix.CAP_WAKE_ALARM,
	"block_suspend": unix.CAP_BLOCK_SUSPEND, "audit_read": unix.CAP_AUDIT_READ, "perfmon": unix.CAP_PERFMON,
	"bpf": unix.CAP_BPF, "checkpoint_restore": unix.CAP_CHECKPOINT_RESTORE,
}

// capMask returns the bounding set as a bit mask: nspawn's default, plus add,
// minus drop. Names are case-insensitive with or without "CAP_"; "all" adds or
// drops everything.
func capMask(add, drop []string, privateNet bool) (uint64, error) {
	var m uint64
	for _, c := range defaultCaps {
		m |= 1 << uint(c)
	}
	if privateNet {
		m |= 1 << unix.CAP_NET_ADMIN
	}
	for _, s := range add {
		b, err := capBits("capAdd", s)
		if err != nil {
			return 0, err
		}
		m |= b
	}
	for _, s := range drop {
		b, err := capBits("capDrop", s)
		if err != nil {
			return 0, err
		}
		m &^= b
	}
	return m, nil
}

// capBits is the bit of capability s (case-insensitive, with or without
// "CAP_"), or every bit for "all"; field names the field in the error.
func capBits(field, s string) (uint64, error) {
	n := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "cap_")
	if n == "all" {
		return 1<<(unix.CAP_LAST_CAP+1) - 1, nil
	}
	c, ok := capNames[n]
	if !ok {
		return 0, fmt.Errorf("%s: unknown capability %q (see capabilities(7), e.g. CAP_NET_ADMIN)", field, s)
	}
	return 1 << uint(c), nil
}

// CanonicalCapability returns capability s (as capAdd takes it) in the
// form "CAP_NET_ADMIN", or an error for a name berth does not know.
func CanonicalCapability(s string) (string, error) {
	n := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "cap_")
	if _, ok := capNames[n]; !ok {
		return "", fmt.Errorf("unknown capability %q (see capabilities(7), e.g. CAP_NET_ADMIN)", s)
	}
	return "CAP_" + strings.ToUpper(n), nil
}

// DefaultCapabilities is the bounding set of a machine without capAdd and
// capDrop, in the form "CAP_NET_ADMIN", sorted: with privateNet (its own
// network namespace) CAP_NET_ADMIN is in it.
func DefaultCapabilities(privateNet bool) []string {
	m, _ := capMask(nil, nil, privateNet)
	var out []string
	for n, c := range capNames {
		if m&(1<<uint(c)) != 0 {
			out = append(out, "CAP_"+strings.ToUpper(n))
		}
	}
	sort.Strings(out)
	return out
}

// dropBoundingSet removes every capability not in keep from the calling
// thread's bounding set, and empties its inheritable and ambient sets. For
// root, execve gives the new program the bounding set plus the inheritable
// set as its permitted set (a root exec counts as a file with every
// inheritable capability): a capability left inheritable by whoever started
// berth would survive the drop from the bounding set, and ambient ones would
// reach a non-root program.
func dropBoundingSet(keep uint64) error {
	if c, e := dropBounding(keep); e != 0 {
		return fmt.Errorf("drop capability %d from the bounding set: %w", c, e)
	}
	return clearInheritable()
}

// clearInheritable empties the calling thread's ambient and inheritable
// capability sets (capabilities are per thread: this must run on the thread
// that execs or forks).
func clearInheritable() error {
	if e := clearAmbient(); e != 0 {
		return fmt.Errorf("clear the ambient capabilities: %w", e)
	}
	var hdr unix.CapUserHeader
	var data [2]unix.CapUserData
	if e := capsWithin(^uint64(0), &hdr, &data); e != 0 {
		return fmt.Errorf("clear the inheritable capabilities: %w", e)
	}
	return nil
}

// limitToBounding shrinks the calling thread's effective and permitted sets to
// the bounding set keep (and empties the inheritable one): a process forked
// from this thread into the machine holds nothing beyond the machine's set
// from its first instruction, not only after its exec.
func limitToBounding(keep uint64) error {
	var hdr unix.CapUserHeader
	var data [2]unix.CapUserData
	if e := capsWithin(keep, &hdr, &data); e != 0 {
		return fmt.Errorf("limit capabilities to the machine's bounding set: %w", e)
	}
	return nil
}

// shedPrivileges leaves this process with nothing a guest could borrow: no
// capability on any thread (capabilities are per thread, and the Go runtime
// runs several) but CAP_KILL when the bounding set bnd has it (the reaper
// forwards signals to a command that may have changed its user; a signal
// reaches only the machine's own PID namespace), no_new_privs on every thread,
// and not dumpable, so nothing without CAP_SYS_PTRACE may attach to it or read
// its memory. It is how berth's application-mode reaper lives once it has
// started the command. syscall.AllThreadsSyscall needs a binary without cgo
// (berth is built with CGO_ENABLED=0); in one with cgo it fails, and the
// machine does not start.
func shedPrivileges(bnd uint64) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if bnd&(1<<unix.CAP_KILL) != 0 {
		data[0].Effective, data[0].Permitted = 1<<unix.CAP_KILL, 1<<unix.CAP_KILL
	}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		if e == unix.ENOTSUP {
			return errors.New("drop the reaper's capabilities on every thread: this binary is built with cgo; build berth with CGO_ENABLED=0")
		}
		return fmt.Errorf("drop the reaper's capabilities: %w", e)
	}
	runtime.KeepAlive(&hdr)
	runtime.KeepAlive(&data)
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
		return fmt.Errorf("set no_new_privs on the reaper: %w", e)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("make the reaper non-dumpable: %w", err)
	}
	return nil
}
