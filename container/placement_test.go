package container_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
)

// TestIOAndCPUPlacement boots a busybox machine on this host's cgroup v1
// controllers with a write bandwidth limit on the disk its bind mount lives
// on and a CPU set: the blkio and cpuset files hold them, a direct-I/O dd
// inside is throttled to the limit, the machine's processes may run on its
// CPUs only, and a live update moves both (and takes back what it no longer
// lists). A missing device and an offline CPU are refused by name.
func TestIOAndCPUPlacement(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	for _, c := range []string{"blkio", "cpuset"} {
		if !testenv.HasController(t, c) {
			t.Skipf("skipping: this host has no %s controller", c)
		}
	}
	data := t.TempDir()
	dev, disk := testenv.DiskOf(t, data)
	ncpu := onlineCPUs(t)
	first, second := "0", "0"
	if ncpu > 1 {
		first = "1"
	}

	cfg := newConfig(t, "place")
	cfg.Boot = true
	cfg.Root = container.Root{Dir: testenv.BusyboxGuest(t), ReadOnly: true}
	cfg.Mounts = []container.Mount{{Type: "bind", Source: data, Target: "/data"}}
	cfg.Resources = container.Resources{IOWeight: 500, CPUSet: first,
		IO: []container.IOLimit{{Device: dev, WriteBps: 1 << 20}}}
	m := start(t, cfg)
	state := m.WaitPhase(t, container.PhaseRunning, 1)

	blkio := v1Dir(t, "blkio", state.CgroupPath)
	cpuset := v1Dir(t, "cpuset", state.CgroupPath)
	// v1 blk-throttle is not hierarchical: the limit is on the machine's
	// cgroup and on each below it, where its processes are.
	for _, d := range []string{"", "payload", "supervisor"} {
		expectFile(t, filepath.Join(blkio, d, "blkio.throttle.write_bps_device"), disk+" 1048576")
		expectFile(t, filepath.Join(blkio, d, "blkio.throttle.read_iops_device"), "")
	}
	if _, err := os.Stat(filepath.Join(blkio, "blkio.bfq.weight")); err == nil {
		expectFile(t, filepath.Join(blkio, "blkio.bfq.weight"), "136") // IOWeight 500 on BFQ's 1..1000
	}
	for _, d := range []string{"", "payload", "supervisor"} {
		expectFile(t, filepath.Join(cpuset, d, "cpuset.cpus"), first)
	}
	if out, _ := m.sh(t, "grep Cpus_allowed_list /proc/self/status"); !strings.Contains(out, "Cpus_allowed_list:\t"+first+"\n") {
		t.Errorf("inside, with cpuset %s:\n%s", first, out)
	}

	// 4 MiB of direct writes under 1 MiB/s take about 4 s (the first
	// throttle slice lets a little through at once).
	begin := time.Now()
	out, code := m.sh(t, "dd if=/dev/zero of=/data/f bs=64k count=64 oflag=direct 2>&1")
	took := time.Since(begin)
	t.Logf("dd of 4 MiB, direct, under writeBandwidth 1M: %v\n%s", took.Round(10*time.Millisecond), out)
	if code != 0 {
		t.Fatalf("dd: exit %d:\n%s", code, out)
	}
	if took < 3*time.Second {
		t.Errorf("4 MiB written in %v under a 1 MiB/s limit: not throttled", took)
	}

	// Live: the write limit goes, a read IOPS limit comes, the machine moves
	// to other CPUs (all of them, then the first only: widening and
	// narrowing under the supervisor's and payload's cgroups).
	c, err := container.Dial(cfg.RuntimeDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	all := fmt.Sprintf("0-%d", ncpu-1)
	if ncpu == 1 {
		all = "0"
	}
	if err := c.Update(ctx, container.Resources{CPUSet: all, IO: []container.IOLimit{{Device: dev, ReadIOPS: 100}}}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"", "payload"} {
		expectFile(t, filepath.Join(blkio, d, "blkio.throttle.write_bps_device"), "")
		expectFile(t, filepath.Join(blkio, d, "blkio.throttle.read_iops_device"), disk+" 100")
	}
	expectFile(t, filepath.Join(cpuset, "payload", "cpuset.cpus"), all)
	if err := c.Update(ctx, container.Resources{CPUSet: second}); err != nil {
		t.Fatal(err)
	}
	expectFile(t, filepath.Join(blkio, "payload", "blkio.throttle.read_iops_device"), "")
	for _, d := range []string{"", "payload", "supervisor"} {
		expectFile(t, filepath.Join(cpuset, d, "cpuset.cpus"), second)
	}
	if out, _ := m.sh(t, "grep Cpus_allowed_list /proc/self/status"); !strings.Contains(out, "Cpus_allowed_list:\t"+second+"\n") {
		t.Errorf("inside, after the update to cpuset %s:\n%s", second, out)
	}
	// No cpuset: the parent's CPUs again.
	if err := c.Update(ctx, container.Resources{}); err != nil {
		t.Fatal(err)
	}
	parent, _ := os.ReadFile(filepath.Join(filepath.Dir(cpuset), "cpuset.cpus"))
	expectFile(t, filepath.Join(cpuset, "payload", "cpuset.cpus"), strings.TrimSpace(string(parent)))

	// Refused by name, and nothing changes.
	for _, bad := range []struct {
		r    container.Resources
		want string
	}{
		{container.Resources{IO: []container.IOLimit{{Device: "/dev/berth-no-such-disk", ReadBps: 1}}}, "resources.io: /dev/berth-no-such-disk: no such device on this host"},
		{container.Resources{IO: []container.IOLimit{{Device: "/dev/null", ReadBps: 1}}}, "resources.io: /dev/null is not a block device"},
		{container.Resources{CPUSet: fmt.Sprint(ncpu + 3)}, fmt.Sprintf("resources.cpuset: CPU %d not online on this host", ncpu+3)},
	} {
		if err := c.Update(ctx, bad.r); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("update with %+v: %v, want %q", bad.r, err, bad.want)
		}
	}
}

func onlineCPUs(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(b))
	if _, hi, ok := strings.Cut(s, "-"); ok && !strings.Contains(s, ",") {
		var n int
		fmt.Sscan(hi, &n)
		return n + 1
	}
	return 1
}

// v1Dir is the machine's cgroup in the v1 hierarchy of controller.
func v1Dir(t *testing.T, controller, path string) string {
	t.Helper()
	d := filepath.Join("/sys/fs/cgroup", controller, path)
	if _, err := os.Stat(d); err != nil {
		t.Fatalf("no %s cgroup of the machine: %v", controller, err)
	}
	return d
}

// expectFile checks a cgroup file's content, blanks trimmed.
func expectFile(t *testing.T, file, want string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Error(err)
		return
	}
	if got := strings.TrimSpace(string(b)); got != want {
		t.Errorf("%s = %q, want %q", file, got, want)
	}
}

// TestPlacementStartErrors: a machine whose device is missing or whose CPU
// is offline does not start; the error names the machine, the field and the
// device or CPU, and no cgroup of it is left.
func TestPlacementStartErrors(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	parent := "/" + testenv.UniqueName("berth-place")
	dirs := testenv.CgroupDirs(t, parent)
	t.Cleanup(func() {
		for _, d := range dirs {
			_ = unix.Rmdir(d)
		}
	})
	d := container.CgroupfsDriver{Parent: parent}
	node, disk := testenv.DiskOf(t, t.TempDir())
	// A second node of the same disk, as udev's /dev/block/MAJ:MIN is.
	alias := filepath.Join(t.TempDir(), "alias")
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(alias, unix.S_IFBLK|0o600, int(st.Rdev)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		r    container.Resources
		want string
	}{
		{container.Resources{IO: []container.IOLimit{{Device: "/dev/berth-no-such-disk", WriteBps: 1}}},
			`machine "bad": cgroup ` + parent + `/bad: resources.io: /dev/berth-no-such-disk: no such device on this host`},
		{container.Resources{IO: []container.IOLimit{{Device: node, WriteBps: 1}, {Device: alias, ReadBps: 1}}},
			"resources.io: " + node + " and " + alias + " are on one disk (" + disk + ")"},
		{container.Resources{CPUSet: "4095"}, `machine "bad": cgroup ` + parent + `/bad: resources.cpuset: CPU 4095 not online on this host`},
	} {
		_, err := d.Create(context.Background(), container.CgroupMachine{Name: "bad", Resources: tc.r})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Create with %+v: %v, want %q", tc.r, err, tc.want)
		}
		for _, dir := range dirs {
			if _, err := os.Stat(filepath.Join(dir, "bad")); err == nil {
				t.Errorf("%s left behind", filepath.Join(dir, "bad"))
			}
		}
	}
}
