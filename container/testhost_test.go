package container_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testhost"
)

// TestOnPureCgroup2 runs the machine tests that need no Debian guest inside a
// test host booted with a pure cgroup2 layout (what current systemd hosts run):
// there the BPF program is the only device policy, Enter places processes with
// CLONE_INTO_CGROUP alone, and the guest's cgroup namespace is cut from the one
// hierarchy. This CI machine itself is a hybrid host.
func TestOnPureCgroup2(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	if testhost.Inside() {
		t.Skip("already inside the test host")
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		t.Skip("this host is pure cgroup2 itself: the tests run here directly")
	}
	busybox := testenv.BusyboxGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h := testhost.New(t, testhost.Options{BindRO: []string{busybox + ":/var/cache/berth-test/busybox"}})
	if err := h.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := h.Exec(ctx, "stat", "-fc", "%T", "/sys/fs/cgroup")
	if err != nil || string(out) != "cgroup2fs\n" {
		t.Fatalf("the test host is not pure cgroup2: %q, %v", out, err)
	}
	out, err = h.RunTestBinary(ctx, "^(TestBusybox|TestApplication|TestDeviceFilter|TestFirstStartRace|TestFailedStartLeavesNoCgroup|TestBind)$")
	t.Logf("inside the test host:\n%s", out)
	if err != nil {
		t.Fatalf("the machine tests failed on pure cgroup2: %v", err)
	}
}
