package userns

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestRangeNS: the namespace maps the range for users and groups, is a user
// namespace other than this process's, and Close kills and reaps its holder.
func TestRangeNS(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	const base = 0x5E990000
	ns, err := RangeNS(base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	pid := ns.Pid()
	for _, f := range []string{"uid_map", "gid_map"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
		if got := strings.Fields(string(b)); err != nil || strings.Join(got, " ") != fmt.Sprintf("0 %d 65536", base) {
			t.Errorf("%s = %q, %v", f, b, err)
		}
	}
	var mine, its unix.Stat_t
	if err := unix.Stat("/proc/self/ns/user", &mine); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(ns.Fd(), &its); err != nil {
		t.Fatal(err)
	}
	if mine.Ino == its.Ino {
		t.Error("the namespace's descriptor is this process's own user namespace")
	}
	// The holder names itself once it runs, which may be after RangeNS returned.
	testenv.Eventually(t, 5*time.Second, func() error {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "berth-userns" {
			return fmt.Errorf("the holder's name is %q", comm)
		}
		return nil
	})
	if err := ns.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	// Reaped, not a zombie: the PID is gone (it was this process's child,
	// so nothing else could have taken it yet).
	if err := unix.Kill(pid, 0); err != unix.ESRCH {
		t.Errorf("after Close, kill(%d, 0) = %v, want ESRCH", pid, err)
	}
	if _, err := OpenNS(); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("OpenNS without maps: %v", err)
	}
}

// TestProbe: ext4 (the temporary directory) and tmpfs can be idmapped here,
// ramfs cannot, and the refusal names the path, ramfs and the kernel.
func TestProbe(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	if err := KernelSupportsIdmappedMounts(); err != nil {
		t.Skip(err)
	}
	for _, dir := range []string{t.TempDir(), testenv.MountFS(t, "tmpfs", "size=1m")} {
		if err := Probe(dir); err != nil {
			t.Errorf("Probe(%s): %v", dir, err)
		}
	}
	ram := testenv.MountFS(t, "ramfs", "")
	err := Probe(ram)
	if !errors.Is(err, errdefs.ErrUnsupported) {
		t.Fatalf("Probe(ramfs) = %v, want ErrUnsupported", err)
	}
	for _, want := range []string{ram + " is on ramfs", "Linux " + KernelRelease(), "mount_setattr"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Probe(ramfs) = %q, want it to say %q", err, want)
		}
	}
	t.Log(err)
}
