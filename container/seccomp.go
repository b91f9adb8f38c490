package container

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"

	"github.com/berthd/berth/internal/syscalls"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The machine's system call filter: an allow-list in the manner of
// systemd-nspawn's (src/nspawn/nspawn-seccomp.c), built as a classic BPF
// program for seccomp(2). What is allowed, and why, is data in package
// internal/syscalls; docs/runtime.md lists it. The program:
//
//   - answers for the host's own ABI and its 32-bit compat ABI (x86_64 and
//     i386, or aarch64 and arm), each with its own numbers, so 32-bit programs
//     in a machine work as under nspawn; x32 calls get ENOSYS; any other ABI
//     kills the process (none can occur);
//   - allows the machine's calls (ranges of numbers, each a few instructions;
//     the kernel caches the verdict of every call whose answer does not depend
//     on its arguments, so allowed calls cost nothing after the first);
//   - refuses the other calls berth knows with EPERM, and answers ENOSYS for
//     numbers above its tables (calls newer than berth), so libraries fall back
//     to older calls, as nspawn does;
//   - makes socket(AF_NETLINK, …, NETLINK_AUDIT) fail with EAFNOSUPPORT
//     (audit does not work in containers; libaudit then takes audit for
//     disabled), comparing only the low 32 bits of the int arguments, as the
//     kernel reads them.
//
// It is loaded without no_new_privs (setuid programs in the guest keep
// working), while the loader still holds CAP_SYS_ADMIN.

const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
	x32Bit   = 0x40000000

	// Offsets in struct seccomp_data: nr, arch, instruction_pointer, args[6].
	offNr   = 0
	offArch = 4
	offArg0 = 16
	offArg2 = 32
)

func retErrno(e unix.Errno) uint32 { return unix.SECCOMP_RET_ERRNO | uint32(e)&unix.SECCOMP_RET_DATA }

// seccompABIs are the ABIs of this build's architecture: the native one
// first, then its 32-bit compat ABI.
func seccompABIs() ([]*syscalls.Table, error) {
	switch runtime.GOARCH {
	case "amd64":
		return []*syscalls.Table{syscalls.X86_64, syscalls.I386}, nil
	case "arm64":
		return []*syscalls.Table{syscalls.AARCH64, syscalls.ARM}, nil
	}
	return nil, fmt.Errorf("no system call filter for %s: berth knows the tables of amd64 and arm64", runtime.GOARCH)
}

// seccompFilter is a built filter and what it allows.
type seccompFilter struct {
	prog    []bpf.RawInstruction
	allowed int // names allowed on the native ABI
	summary string
}

// buildSeccomp builds the filter of a machine whose bounding set is caps,
// with the definition's systemCallFilter entries.
func buildSeccomp(caps uint64, entries []string) (*seccompFilter, error) {
	names, err := syscalls.Resolve(capNamesOf(caps), entries)
	if err != nil {
		return nil, err
	}
	abis, err := seccompABIs()
	if err != nil {
		return nil, err
	}
	var prog []bpf.Instruction
	prog = append(prog, bpf.LoadAbsolute{Off: offArch, Size: 4})
	var allowedNative int
	for i, t := range abis {
		block, n := abiBlock(t, names, i == 0 && t == syscalls.X86_64)
		if i == 0 {
			allowedNative = n
		}
		// if arch == t: run its block; else skip over it.
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: t.Audit, SkipTrue: 1})
		prog = append(prog, bpf.Jump{Skip: uint32(len(block))})
		prog = append(prog, block...)
	}
	prog = append(prog, bpf.RetConstant{Val: retKill})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble the system call filter: %w", err)
	}
	if len(raw) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("system call filter of %d instructions: more than the kernel's %d", len(raw), unix.BPF_MAXINSNS)
	}
	abiNames := make([]string, len(abis))
	for i, t := range abis {
		abiNames[i] = t.Name
	}
	return &seccompFilter{prog: raw, allowed: allowedNative,
		summary: fmt.Sprintf("allow-list: %d system calls (%s), EPERM for the rest", allowedNative, strings.Join(abiNames, ", "))}, nil
}

// abiBlock is the part of the program for one ABI, entered with the
// architecture in the accumulator; every path through it returns.
func abiBlock(t *syscalls.Table, allowed map[string]bool, x32 bool) ([]bpf.Instruction, int) {
	var nums []int
	for name := range allowed {
		if n := t.Number(name); n >= 0 {
			nums = append(nums, n)
		}
	}
	sort.Ints(nums)
	var b []bpf.Instruction
	b = append(b, bpf.LoadAbsolute{Off: offNr, Size: 4})
	if x32 {
		b = append(b, bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32Bit, SkipFalse: 1},
			bpf.RetConstant{Val: retErrno(unix.ENOSYS)})
	}
	if sock := t.Number("socket"); sock >= 0 {
		action := retErrno(unix.EPERM)
		if allowed["socket"] {
			action = retAllow
		}
		b = append(b,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(sock), SkipFalse: 6},
			bpf.LoadAbsolute{Off: offArg0, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AF_NETLINK, SkipFalse: 3},
			bpf.LoadAbsolute{Off: offArg2, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.NETLINK_AUDIT, SkipFalse: 1},
			bpf.RetConstant{Val: retErrno(unix.EAFNOSUPPORT)},
			bpf.RetConstant{Val: action},
		)
	}
	for _, r := range ranges(nums) {
		b = append(b,
			bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: uint32(r[0]), SkipTrue: 1},
			bpf.RetConstant{Val: retErrno(unix.EPERM)},
			bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: uint32(r[1]), SkipTrue: 1},
			bpf.RetConstant{Val: retAllow},
		)
	}
	b = append(b,
		bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: uint32(t.Max()), SkipFalse: 1},
		bpf.RetConstant{Val: retErrno(unix.ENOSYS)},
		bpf.RetConstant{Val: retErrno(unix.EPERM)},
	)
	return b, len(nums)
}

// ranges folds sorted, distinct numbers into [lo, hi] runs.
func ranges(nums []int) [][2]int {
	var out [][2]int
	for i, n := range nums {
		if i > 0 && n == out[len(out)-1][1]+1 {
			out[len(out)-1][1] = n
			continue
		}
		if i > 0 && n == out[len(out)-1][1] {
			continue
		}
		out = append(out, [2]int{n, n})
	}
	return out
}

// capNamesOf lists a bounding set as canonical names (CAP_SYS_TIME).
func capNamesOf(mask uint64) []string {
	var out []string
	for name, c := range capNames {
		if mask&(1<<uint(c)) != 0 {
			out = append(out, "CAP_"+strings.ToUpper(name))
		}
	}
	sort.Strings(out)
	return out
}

var errNoSeccomp = errors.New("this kernel has no seccomp filters (CONFIG_SECCOMP_FILTER): set security.seccomp: optional to start machines without a system call filter")

// machineSeccomp builds the filter of the machine cfg describes, whose
// bounding set is caps; nil when the kernel has none and the machine may start
// without (security.seccomp: optional).
func machineSeccomp(cfg Config, caps uint64) (*seccompFilter, error) {
	if !seccompAvailable() {
		if cfg.SeccompOptional {
			return nil, nil
		}
		return nil, errNoSeccomp
	}
	return buildSeccomp(caps, cfg.SyscallFilter)
}
