package container

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DeviceRule allows one character device (all access: read, write, mknod).
// Minor -1 means any minor. Block devices are never allowed. Unit is how
// systemd's DeviceAllow= names it.
type DeviceRule struct {
	Major, Minor int64
	Unit         string // "/dev/null", or "char-pts" for a whole major
	Why          string
}

// DeviceRules is a machine's device policy: nspawn's DevicePolicy=closed list.
// The console is not in it: /dev/console in a machine is a bind of one of its
// own ptys (136:N), and c 5:1 is the host's kernel console.
func DeviceRules(allowTun bool) []DeviceRule {
	r := []DeviceRule{
		{1, 3, "/dev/null", "discarding output"},
		{1, 5, "/dev/zero", "zero pages"},
		{1, 7, "/dev/full", "ENOSPC for tests of write errors"},
		{1, 8, "/dev/random", "entropy (the same pool as getrandom)"},
		{1, 9, "/dev/urandom", "entropy"},
		{5, 0, "/dev/tty", "a process's own controlling terminal"},
		{5, 2, "/dev/ptmx", "new ptys, in the machine's own devpts (a node outside a devpts finds the pts directory beside it)"},
		{136, -1, "char-pts", "the machine's ptys, its console included (a node outside its devpts opens nothing)"},
	}
	if allowTun {
		r = append(r, DeviceRule{10, 200, "/dev/net/tun", "tun/tap links inside the machine's own network namespace"})
	}
	return r
}

// v1 returns the rule as a devices.allow line of the v1 device controller.
func (r DeviceRule) v1() string {
	minor := "*"
	if r.Minor >= 0 {
		minor = strconv.FormatInt(r.Minor, 10)
	}
	return "c " + strconv.FormatInt(r.Major, 10) + ":" + minor + " rwm"
}

// deviceProgram assembles a BPF_PROG_TYPE_CGROUP_DEVICE program that returns
// 1 (allow) for a character device matching a rule and 0 (deny) for anything
// else: the cgroup2 way of a device policy, where no device controller exists.
//
// The context is struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32
// minor}, the device type in the low 16 bits of access_type.
func deviceProgram(rules []DeviceRule) []byte {
	var prog []byte
	insn := func(code uint8, dst, src uint8, off int16, imm int32) {
		var b [8]byte
		b[0] = code
		b[1] = src<<4 | dst
		binary.LittleEndian.PutUint16(b[2:], uint16(off))
		binary.LittleEndian.PutUint32(b[4:], uint32(imm))
		prog = append(prog, b[:]...)
	}
	const (
		ldxW    = unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W
		and64K  = unix.BPF_ALU64 | unix.BPF_AND | unix.BPF_K
		mov64K  = unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K
		jneK    = unix.BPF_JMP | unix.BPF_JNE | unix.BPF_K
		exitIns = unix.BPF_JMP | unix.BPF_EXIT
	)
	insn(ldxW, 2, 1, 0, 0) // r2 = ctx->access_type
	insn(and64K, 2, 0, 0, 0xffff)
	insn(ldxW, 4, 1, 4, 0) // r4 = ctx->major
	insn(ldxW, 5, 1, 8, 0) // r5 = ctx->minor
	for _, r := range rules {
		n := 4 // checks of type and major, r0 = 1, exit
		if r.Minor >= 0 {
			n = 5
		}
		insn(jneK, 2, 0, int16(n-1), unix.BPF_DEVCG_DEV_CHAR)
		insn(jneK, 4, 0, int16(n-2), int32(r.Major))
		if r.Minor >= 0 {
			insn(jneK, 5, 0, int16(n-3), int32(r.Minor))
		}
		insn(mov64K, 0, 0, 0, 1)
		insn(exitIns, 0, 0, 0, 0)
	}
	insn(mov64K, 0, 0, 0, 0)
	insn(exitIns, 0, 0, 0, 0)
	return prog
}

// attachDeviceFilter loads the device program for rules and attaches it to
// the cgroup2 directory dir. BPF_F_ALLOW_MULTI lets the guest's systemd attach
// its own device programs below (the kernel runs them all; every one must
// allow). The program lives as long as the cgroup.
func attachDeviceFilter(dir string, rules []DeviceRule) error {
	prog := deviceProgram(rules)
	// Without a log first: the verifier's log formats every instruction it
	// checks, which costs more than the check (a tenth of a supervisor's
	// start-up CPU when 20 machines start together). Only a program the
	// kernel refuses is loaded again, for the log that says why.
	fd, errno := loadDeviceProgram(prog, nil)
	if errno != 0 {
		logBuf := make([]byte, 64<<10)
		if fd2, again := loadDeviceProgram(prog, logBuf); again != 0 {
			errno = again
		} else {
			unix.Close(int(fd2)) // loaded the second time: still refused the first
		}
		return fmt.Errorf("load the device filter: %w %s", errno, logBuf[:clen(logBuf)])
	}
	defer unix.Close(int(fd))
	cg, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("device filter: %w", err)
	}
	defer unix.Close(cg)
	attach := struct {
		targetFd    uint32
		attachBpfFd uint32
		attachType  uint32
		attachFlags uint32
	}{uint32(cg), uint32(fd), unix.BPF_CGROUP_DEVICE, unix.BPF_F_ALLOW_MULTI}
	if _, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_ATTACH, uintptr(unsafe.Pointer(&attach)), unsafe.Sizeof(attach)); errno != 0 {
		return fmt.Errorf("attach the device filter to %s: %w", dir, errno)
	}
	return nil
}

// loadDeviceProgram is BPF_PROG_LOAD of a cgroup device program, with the
// verifier's log in logBuf when it is not nil.
func loadDeviceProgram(prog, logBuf []byte) (uintptr, unix.Errno) {
	license := []byte("Apache-2.0\x00")
	load := struct {
		progType    uint32
		insnCnt     uint32
		insns       uint64
		license     uint64
		logLevel    uint32
		logSize     uint32
		logBuf      uint64
		kernVersion uint32
		progFlags   uint32
	}{
		progType: unix.BPF_PROG_TYPE_CGROUP_DEVICE,
		insnCnt:  uint32(len(prog) / 8),
		insns:    uint64(uintptr(unsafe.Pointer(&prog[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	if len(logBuf) > 0 {
		load.logLevel, load.logSize = 1, uint32(len(logBuf))
		load.logBuf = uint64(uintptr(unsafe.Pointer(&logBuf[0])))
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&load)), unsafe.Sizeof(load))
	runtime.KeepAlive(prog)
	runtime.KeepAlive(license)
	runtime.KeepAlive(logBuf)
	return fd, errno
}

func clen(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}

var errNoDevicePolicy = errors.New("no device fence can be placed on this host: neither the v1 device controller nor cgroup BPF device programs are available (set security.deviceFence: optional to start without one)")

// placeDeviceFence puts the device policy on the machine's cgroup at path in
// every hierarchy that can carry one: on a v1 device controller deny all, then
// allow the rules; on cgroup2 a BPF device program (BPF_F_ALLOW_MULTI, so the
// guest's systemd may add programs of its own below, each of which must allow
// too). The guest's cgroup namespace starts one level further down, at
// "payload", so it can neither see nor change what is placed here. It returns
// what it placed, for state.json ("" when nothing), and why the BPF program
// could not be attached when it could not; err is a v1 write that failed.
func placeDeviceFence(hs []hierarchy, path string, rules []DeviceRule) (placedOn string, bpfErr, err error) {
	var placed []string
	for _, h := range hs {
		dir := h.dir(path)
		switch {
		case h.Unified:
			if bpfErr = attachDeviceFilter(dir, rules); bpfErr == nil {
				placed = append(placed, "bpf")
			}
		case h.has("devices"):
			if err := writeFile(filepath.Join(dir, "devices.deny"), "a"); err != nil {
				return "", bpfErr, err
			}
			for _, r := range rules {
				if err := writeFile(filepath.Join(dir, "devices.allow"), r.v1()); err != nil {
					return "", bpfErr, err
				}
			}
			placed = append(placed, "v1")
		}
	}
	if len(placed) == 0 {
		return "", bpfErr, nil
	}
	return strings.Join(placed, "+") + " on " + path, bpfErr, nil
}
