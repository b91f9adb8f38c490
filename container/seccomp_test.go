package container

import (
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/berthd/berth/internal/syscalls"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// runFilter runs a seccomp program in x/net/bpf's VM on a seccomp_data for
// the call nr of abi with args. The VM reads words big-endian, so the data is
// written that way; the program's offsets are the kernel's.
func runFilter(t *testing.T, prog []bpf.RawInstruction, abi *syscalls.Table, nr int, args ...uint32) uint32 {
	t.Helper()
	insns, ok := bpf.Disassemble(prog)
	if !ok {
		t.Fatal("the program does not disassemble")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 64)
	binary.BigEndian.PutUint32(data[offNr:], uint32(nr))
	binary.BigEndian.PutUint32(data[offArch:], abi.Audit)
	for i, a := range args {
		binary.BigEndian.PutUint32(data[offArg0+8*i:], a)
	}
	r, err := vm.Run(data)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(r)
}

func TestSeccompProgram(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the table below is x86_64's")
	}
	defCaps, _ := capMask(nil, nil, true)
	f, err := buildSeccomp(defCaps, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s; %d instructions", f.summary, len(f.prog))
	eperm, enosys := retErrno(unix.EPERM), retErrno(unix.ENOSYS)
	for _, tc := range []struct {
		abi  *syscalls.Table
		name string
		args []uint32
		want uint32
	}{
		{syscalls.X86_64, "read", nil, retAllow},
		{syscalls.X86_64, "mount", nil, retAllow},
		{syscalls.X86_64, "clone3", nil, retAllow},
		{syscalls.X86_64, "ptrace", nil, retAllow}, // CAP_SYS_PTRACE is in the default set
		{syscalls.X86_64, "reboot", nil, retAllow}, // CAP_SYS_BOOT too: it ends the machine's PID namespace
		{syscalls.X86_64, "open_by_handle_at", nil, eperm},
		{syscalls.X86_64, "name_to_handle_at", nil, retAllow},
		{syscalls.X86_64, "fanotify_init", nil, eperm},
		{syscalls.X86_64, "keyctl", nil, eperm},
		{syscalls.X86_64, "add_key", nil, eperm},
		{syscalls.X86_64, "perf_event_open", nil, eperm},
		{syscalls.X86_64, "swapon", nil, eperm},
		{syscalls.X86_64, "bpf", nil, eperm},
		{syscalls.X86_64, "kexec_load", nil, eperm},
		{syscalls.X86_64, "init_module", nil, eperm},
		{syscalls.X86_64, "clock_settime", nil, eperm},
		{syscalls.X86_64, "iopl", nil, eperm},
		{syscalls.X86_64, "userfaultfd", nil, eperm},
		{syscalls.X86_64, "io_uring_setup", nil, eperm},
		{syscalls.X86_64, "io_setup", nil, retAllow},
		{syscalls.X86_64, "socket", []uint32{unix.AF_INET, unix.SOCK_STREAM, 0}, retAllow},
		{syscalls.X86_64, "socket", []uint32{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE}, retAllow},
		{syscalls.X86_64, "socket", []uint32{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT}, retErrno(unix.EAFNOSUPPORT)},
		{syscalls.I386, "read", nil, retAllow},
		{syscalls.I386, "socketcall", nil, retAllow},
		{syscalls.I386, "open_by_handle_at", nil, eperm},
		{syscalls.I386, "socket", []uint32{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT}, retErrno(unix.EAFNOSUPPORT)},
	} {
		nr := tc.abi.Number(tc.name)
		if nr < 0 {
			t.Fatalf("%s has no %s", tc.abi.Name, tc.name)
		}
		if got := runFilter(t, f.prog, tc.abi, nr, tc.args...); got != tc.want {
			t.Errorf("%s %s%v = %#x, want %#x", tc.abi.Name, tc.name, tc.args, got, tc.want)
		}
	}
	// Newer than berth's tables: ENOSYS, so libraries fall back.
	if got := runFilter(t, f.prog, syscalls.X86_64, syscalls.X86_64.Max()+1); got != enosys {
		t.Errorf("a call above the table = %#x, want ENOSYS", got)
	}
	// x32 calls: ENOSYS; another architecture: killed.
	if got := runFilter(t, f.prog, syscalls.X86_64, x32Bit|syscalls.X86_64.Number("read")); got != enosys {
		t.Errorf("x32 read = %#x, want ENOSYS", got)
	}
	if got := runFilter(t, f.prog, syscalls.AARCH64, 63); got != retKill {
		t.Errorf("an aarch64 call on x86_64 = %#x, want a kill", got)
	}
}

// TestSeccompCapabilities: a capability added brings back its calls; one
// dropped takes them away; the definition's entries go either way.
func TestSeccompCapabilities(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("x86_64 numbers")
	}
	for _, tc := range []struct {
		add, drop, filter []string
		call              string
		want              uint32
	}{
		{[]string{"CAP_SYS_TIME"}, nil, nil, "clock_settime", retAllow},
		{[]string{"CAP_SYS_MODULE"}, nil, nil, "finit_module", retAllow},
		{[]string{"CAP_BPF"}, nil, nil, "bpf", retAllow},
		{[]string{"CAP_PERFMON"}, nil, nil, "perf_event_open", retAllow},
		{nil, []string{"CAP_SYS_PTRACE"}, nil, "ptrace", retErrno(unix.EPERM)},
		{nil, nil, []string{"~@mount"}, "mount", retErrno(unix.EPERM)},
		{nil, nil, []string{"~@mount", "mount"}, "mount", retAllow},
		{nil, nil, []string{"@keyring"}, "keyctl", retAllow},
		{nil, nil, []string{"@io-uring"}, "io_uring_setup", retAllow},
		{[]string{"CAP_SYS_TIME"}, nil, []string{"~clock_settime"}, "clock_settime", retErrno(unix.EPERM)},
	} {
		caps, err := capMask(tc.add, tc.drop, true)
		if err != nil {
			t.Fatal(err)
		}
		f, err := buildSeccomp(caps, tc.filter)
		if err != nil {
			t.Fatal(err)
		}
		if got := runFilter(t, f.prog, syscalls.X86_64, syscalls.X86_64.Number(tc.call)); got != tc.want {
			t.Errorf("add %v drop %v filter %v: %s = %#x, want %#x", tc.add, tc.drop, tc.filter, tc.call, got, tc.want)
		}
	}
	if _, err := buildSeccomp(0, []string{"@nosuchgroup"}); err == nil {
		t.Error("an unknown group was accepted")
	}
	if _, err := buildSeccomp(0, []string{"~frobnicate"}); err == nil {
		t.Error("an unknown system call was accepted")
	}
}

// TestSeccompNeverDefault: nothing berth refuses on purpose is in the default
// list, whatever nspawn's default capabilities bring back.
func TestSeccompNeverDefault(t *testing.T) {
	caps, _ := capMask(nil, nil, true)
	allowed, err := syscalls.Resolve(capNamesOf(caps), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range syscalls.Never {
		names, err := syscalls.Expand(n.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if allowed[name] {
				t.Errorf("%s is allowed by default, but berth refuses it: %s", name, n.Why)
			}
		}
	}
}

// TestNoSeccompRefused: on a kernel without seccomp filters a machine is
// refused with a message that says what to do, unless its definition lets it
// start without one; never a silent downgrade.
func TestNoSeccompRefused(t *testing.T) {
	old := seccompAvailable
	seccompAvailable = func() bool { return false }
	defer func() { seccompAvailable = old }()
	caps, _ := capMask(nil, nil, true)
	if _, err := machineSeccomp(Config{}, caps); err != errNoSeccomp {
		t.Errorf("without seccomp: %v, want the refusal", err)
	}
	if f, err := machineSeccomp(Config{SeccompOptional: true}, caps); err != nil || f != nil {
		t.Errorf("without seccomp, optional: %v, %v; want no filter and no error", f, err)
	}
	seccompAvailable = func() bool { return true }
	if f, err := machineSeccomp(Config{}, caps); err != nil || len(f.prog) == 0 {
		t.Errorf("with seccomp: %v, %v", f, err)
	}
}

func BenchmarkBuildSeccomp(b *testing.B) {
	caps, _ := capMask(nil, nil, true)
	for i := 0; i < b.N; i++ {
		if _, err := buildSeccomp(caps, nil); err != nil {
			b.Fatal(err)
		}
	}
}
