package container

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/berthd/berth/internal/testenv"
)

func TestDeviceRulesV1(t *testing.T) {
	got := []string{}
	for _, r := range DeviceRules(true) {
		got = append(got, r.v1())
	}
	// No c 5:1: that is the host's kernel console.
	want := "c 1:3 rwm,c 1:5 rwm,c 1:7 rwm,c 1:8 rwm,c 1:9 rwm,c 5:0 rwm,c 5:2 rwm,c 136:* rwm,c 10:200 rwm"
	if strings.Join(got, ",") != want {
		t.Errorf("got %s", strings.Join(got, ","))
	}
}

// TestDeviceFilter checks the BPF device program alone: a process in a
// cgroup2 cgroup with the filter (and in no v1 device cgroup of its own) may
// use /dev/null but not /dev/kmsg, and cannot make a block device.
func TestDeviceFilter(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	hs, err := hierarchies()
	if err != nil {
		t.Fatal(err)
	}
	var unified string
	for _, h := range hs {
		if h.Unified {
			unified = h.Mount
		}
	}
	if unified == "" {
		t.Skip("no cgroup2 hierarchy")
	}
	dir := filepath.Join(unified, testenv.UniqueName("berth-devtest"))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeCgroupTree(dir) })
	if err := attachDeviceFilter(dir, DeviceRules(false)); err != nil {
		if errors.Is(err, syscall.EPERM) && insideContainer() {
			t.Skipf("skipping: bpf() is not allowed in this container: %v", err)
		}
		t.Fatal(err)
	}
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	tmp := t.TempDir()
	script := `cat /dev/null && echo null-ok
		head -c1 /dev/kmsg >/dev/null 2>&1 && echo kmsg-ok || echo kmsg-denied
		mknod ` + tmp + `/blk b 7 0 2>/dev/null && echo blk-ok || echo blk-denied
		mknod ` + tmp + `/zero c 1 5 && echo zero-ok`
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got := strings.Fields(string(out)); strings.Join(got, " ") != "null-ok kmsg-denied blk-denied zero-ok" {
		t.Errorf("got %q", out)
	}
}

// TestDeviceProgramRefused: the program is loaded without the verifier's log,
// so one the kernel refuses is loaded again for the log that says why.
func TestDeviceProgramRefused(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	prog := deviceProgram(nil)
	prog = prog[:len(prog)-8] // no exit: the verifier refuses it
	if _, errno := loadDeviceProgram(prog, nil); errno == 0 {
		t.Fatal("a program without an exit was loaded")
	} else if errno == syscall.EPERM && insideContainer() {
		t.Skipf("skipping: bpf() is not allowed in this container")
	}
	log := make([]byte, 64<<10)
	if _, errno := loadDeviceProgram(prog, log); errno == 0 || clen(log) == 0 {
		t.Fatalf("the second load gave errno %v and no log", errno)
	}
	t.Logf("verifier: %s", log[:clen(log)])
}
