package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/cpuset"
)

// TestPlacementFiles checks what the cgroupfs driver writes for I/O limits,
// the I/O weight and the CPU set, on a cgroup2 cgroup and on v1 blkio and
// cpuset cgroups (fake directories: this host's unified hierarchy has no io
// or cpuset controller to give a real one), the limits a live change takes
// back included.
func TestPlacementFiles(t *testing.T) {
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	list := func(sets []cgroupSetting, root string) string {
		var b strings.Builder
		for _, s := range sets {
			rel, _ := filepath.Rel(root, s.file)
			b.WriteString(rel + " <- " + s.val + "\n")
		}
		return b.String()
	}
	cpus, _ := cpuset.Parse("1")
	p := placement{cpus: cpus, io: []diskLimit{
		{"254:0", IOLimit{Device: "/dev/vda", WriteBps: 1 << 20, ReadIOPS: 100}},
		{"8:0", IOLimit{Device: "/dev/sda1", ReadBps: 10 << 20}},
	}}

	t.Run("cgroup2", func(t *testing.T) {
		root := t.TempDir()
		dir := filepath.Join(root, "m")
		write(filepath.Join(dir, "cgroup.controllers"), "cpuset cpu io memory pids\n")
		// 7:0 was limited before; the definition no longer names it.
		write(filepath.Join(dir, "io.max"), "7:0 rbps=1048576 wbps=max riops=max wiops=max\n254:0 rbps=max wbps=2097152 riops=max wiops=max\n")
		write(filepath.Join(dir, "io.weight"), "default 100\n")
		write(filepath.Join(dir, "io.bfq.weight"), "default 100\n")
		got := list(v2Settings(dir, Resources{IOWeight: 500}, p), root)
		for _, want := range []string{
			"m/io.weight <- default 500\n",
			"m/io.bfq.weight <- default 136\n",
			"m/io.max <- 7:0 rbps=max wbps=max riops=max wiops=max\n",
			"m/io.max <- 254:0 rbps=max wbps=1048576 riops=100 wiops=max\n",
			"m/io.max <- 8:0 rbps=10485760 wbps=max riops=max wiops=max\n",
			"m/cpuset.cpus <- 1\n",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("missing %q in:\n%s", want, got)
			}
		}
		if strings.Contains(got, "254:0 rbps=max wbps=max") {
			t.Errorf("a disk still limited is reset first:\n%s", got)
		}
		// No cpuset: the parent's CPUs; no weight: the default.
		got = list(v2Settings(dir, Resources{}, placement{}), root)
		for _, want := range []string{"m/cpuset.cpus <- \n", "m/io.weight <- default 100\n", "m/io.max <- 254:0 rbps=max wbps=max riops=max wiops=max\n"} {
			if !strings.Contains(got, want) {
				t.Errorf("missing %q in:\n%s", want, got)
			}
		}
	})

	t.Run("v1", func(t *testing.T) {
		root := t.TempDir()
		blkio := hierarchy{Mount: filepath.Join(root, "blkio"), Controllers: []string{"blkio"}}
		dir := blkio.dir("/berth/m")
		write(filepath.Join(dir, "blkio.throttle.write_bps_device"), "7:0 4096\n")
		write(filepath.Join(dir, "blkio.throttle.read_bps_device"), "")
		write(filepath.Join(dir, "blkio.throttle.read_iops_device"), "")
		write(filepath.Join(dir, "blkio.throttle.write_iops_device"), "")
		write(filepath.Join(dir, "blkio.bfq.weight"), "100\n")
		sets, err := v1Settings(blkio, dir, Resources{IOWeight: 10000}, p)
		if err != nil {
			t.Fatal(err)
		}
		got := list(sets, root)
		for _, want := range []string{
			"blkio/berth/m/blkio.bfq.weight <- 1000\n",
			"blkio/berth/m/blkio.throttle.write_bps_device <- 7:0 0\n",
			"blkio/berth/m/blkio.throttle.write_bps_device <- 254:0 1048576\n",
			"blkio/berth/m/blkio.throttle.read_iops_device <- 254:0 100\n",
			"blkio/berth/m/blkio.throttle.read_bps_device <- 8:0 10485760\n",
			"blkio/berth/m/blkio.throttle.read_bps_device <- 254:0 0\n",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("missing %q in:\n%s", want, got)
			}
		}

		// cpuset: from 0 to 1 with the supervisor's and payload's cgroups
		// below: the union top-down, then the new set bottom-up.
		cs := hierarchy{Mount: filepath.Join(root, "cpuset"), Controllers: []string{"cpuset"}}
		write(cs.dir("/berth/cpuset.cpus"), "0-3\n")
		for _, d := range []string{"/berth/m", "/berth/m/payload", "/berth/m/supervisor"} {
			write(filepath.Join(cs.dir(d), "cpuset.cpus"), "0\n")
		}
		sets, err = v1Settings(cs, cs.dir("/berth/m"), Resources{}, p)
		if err != nil {
			t.Fatal(err)
		}
		want := "berth/m/cpuset.cpus <- 0-1\nberth/m/payload/cpuset.cpus <- 0-1\nberth/m/supervisor/cpuset.cpus <- 0-1\n" +
			"berth/m/supervisor/cpuset.cpus <- 1\nberth/m/payload/cpuset.cpus <- 1\nberth/m/cpuset.cpus <- 1\n"
		if got := list(sets, cs.Mount); got != want {
			t.Errorf("cpuset writes:\n%s\nwant:\n%s", got, want)
		}
		// No cpuset: the parent's.
		sets, _ = v1Settings(cs, cs.dir("/berth/m"), Resources{}, placement{})
		if got := list(sets, cs.Mount); !strings.HasSuffix(got, "berth/m/cpuset.cpus <- 0-3\n") {
			t.Errorf("cpuset reset:\n%s", got)
		}
	})
}

// TestIOWeightScales: IOWeight= on each file's scale, as systemd converts it.
func TestIOWeightScales(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"io.weight", "io.bfq.weight", "blkio.bfq.weight", "blkio.weight"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for w, want := range map[uint64]string{
		0:     "default 100|default 100|100|500",
		1:     "default 1|default 1|1|10",
		50:    "default 50|default 50|50|250",
		100:   "default 100|default 100|100|500",
		10000: "default 10000|default 1000|1000|1000",
	} {
		var vals []string
		for _, s := range ioWeightSettings(dir, w) {
			vals = append(vals, s.val)
		}
		if got := strings.Join(vals, "|"); got != want {
			t.Errorf("weight %d: %s, want %s", w, got, want)
		}
	}
}
