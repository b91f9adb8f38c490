package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berthd/berth/internal/cpuset"
)

// IOLimit limits a machine's I/O on one block device of the host. A zero field
// means no limit of that kind.
type IOLimit struct {
	Device    string `json:"device"`              // device node on the host, e.g. /dev/vda
	ReadBps   uint64 `json:"readBps,omitempty"`   // bytes per second (rbps, read_bps_device)
	WriteBps  uint64 `json:"writeBps,omitempty"`  // bytes per second (wbps, write_bps_device)
	ReadIOPS  uint64 `json:"readIOPS,omitempty"`  // operations per second (riops, read_iops_device)
	WriteIOPS uint64 `json:"writeIOPS,omitempty"` // operations per second (wiops, write_iops_device)
}

// placement is r's I/O limits and CPU set checked against this host: each
// device resolved to the disk the kernel throttles, the CPUs online.
type placement struct {
	io   []diskLimit
	cpus cpuset.Set // nil: no cpuset, the parent's CPUs
}

// diskLimit is an IOLimit on a whole disk, "MAJ:MIN".
type diskLimit struct {
	disk string
	IOLimit
}

// CheckPlacement reports whether r's devices and CPUs exist on this host: the
// error names the definition's field and the device or CPU. Both cgroup
// drivers call it before they apply r, so a missing disk is a start (or
// update) error rather than a limit silently not applied.
func CheckPlacement(r Resources) error {
	_, err := resolvePlacement(r)
	return err
}

func resolvePlacement(r Resources) (placement, error) {
	var p placement
	for _, l := range r.IO {
		disk, err := wholeDisk(l.Device)
		if err != nil {
			return p, fmt.Errorf("resources.io: %w", err)
		}
		for _, o := range p.io {
			if o.disk == disk {
				return p, fmt.Errorf("resources.io: %s and %s are on one disk (%s), which the kernel throttles as a whole: give it one entry", o.Device, l.Device, disk)
			}
		}
		p.io = append(p.io, diskLimit{disk, l})
	}
	if r.CPUSet == "" {
		return p, nil
	}
	cpus, err := cpuset.Parse(r.CPUSet)
	if err != nil {
		return p, fmt.Errorf("resources.cpuset: %w", err)
	}
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return p, fmt.Errorf("resources.cpuset: %w", err)
	}
	online, err := cpuset.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return p, fmt.Errorf("resources.cpuset: /sys/devices/system/cpu/online: %w", err)
	}
	if off := cpus.Missing(online); len(off) > 0 {
		return p, fmt.Errorf("resources.cpuset: CPU %s not online on this host (online: %s)", off, online)
	}
	p.cpus = cpus
	return p, nil
}

// wholeDisk resolves a block device node to the "MAJ:MIN" of its disk: the
// kernel throttles whole disks only (io.max refuses a partition), so a
// partition's limit goes to its disk, as systemd does.
func wholeDisk(dev string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return "", fmt.Errorf("%s: no such device on this host", dev)
		}
		return "", &os.PathError{Op: "stat", Path: dev, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("%s is not a block device", dev)
	}
	num := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	sys := "/sys/dev/block/" + num
	if _, err := os.Stat(filepath.Join(sys, "partition")); err != nil {
		return num, nil
	}
	b, err := os.ReadFile(filepath.Join(sys, "..", "dev"))
	if err != nil {
		return "", fmt.Errorf("%s is partition %s: its disk: %w", dev, num, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// limitedDisks lists the disks a throttle file (v2 io.max, v1
// blkio.throttle.*_device) holds a limit for: "MAJ:MIN …" lines.
func limitedDisks(file string) []string {
	b, _ := os.ReadFile(file)
	var disks []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			disks = append(disks, f[0])
		}
	}
	return disks
}

// hasDisk reports whether ls limits disk.
func hasDisk(ls []diskLimit, disk string) bool {
	for _, l := range ls {
		if l.disk == disk {
			return true
		}
	}
	return false
}

// v2IOSettings are io.max lines for the limited disks, and one that lifts the
// limits of each disk no longer limited, so an update takes limits back.
func v2IOSettings(dir string, p placement) []cgroupSetting {
	f := filepath.Join(dir, "io.max")
	var sets []cgroupSetting
	for _, d := range limitedDisks(f) {
		if !hasDisk(p.io, d) {
			sets = append(sets, cgroupSetting{f, d + " rbps=max wbps=max riops=max wiops=max"})
		}
	}
	for _, l := range p.io {
		v := func(n uint64) string {
			if n == 0 {
				return "max"
			}
			return strconv.FormatUint(n, 10)
		}
		sets = append(sets, cgroupSetting{f, fmt.Sprintf("%s rbps=%s wbps=%s riops=%s wiops=%s",
			l.disk, v(l.ReadBps), v(l.WriteBps), v(l.ReadIOPS), v(l.WriteIOPS))})
	}
	return sets
}

// v1Throttles are the v1 blkio throttle files and the limit each holds.
var v1Throttles = []struct {
	file string
	of   func(IOLimit) uint64
}{
	{"blkio.throttle.read_bps_device", func(l IOLimit) uint64 { return l.ReadBps }},
	{"blkio.throttle.write_bps_device", func(l IOLimit) uint64 { return l.WriteBps }},
	{"blkio.throttle.read_iops_device", func(l IOLimit) uint64 { return l.ReadIOPS }},
	{"blkio.throttle.write_iops_device", func(l IOLimit) uint64 { return l.WriteIOPS }},
}

// v1ThrottleSettings are the blkio.throttle.* lines: "MAJ:MIN N" sets a
// limit, "MAJ:MIN 0" takes one back.
func v1ThrottleSettings(dir string, p placement) []cgroupSetting {
	var sets []cgroupSetting
	for _, t := range v1Throttles {
		f := filepath.Join(dir, t.file)
		for _, d := range limitedDisks(f) {
			if !hasDisk(p.io, d) {
				sets = append(sets, cgroupSetting{f, d + " 0"})
			}
		}
		for _, l := range p.io {
			sets = append(sets, cgroupSetting{f, l.disk + " " + strconv.FormatUint(t.of(l.IOLimit), 10)})
		}
	}
	return sets
}

// ioWeightSettings are the weight files dir has, with w (1..10000, 0 the
// default) on each file's own scale, as systemd converts IOWeight=:
// io.weight takes it as it is, BFQ's weights (io.bfq.weight,
// blkio.bfq.weight: 1..1000, default 100) piecewise around the default, and
// the legacy blkio.weight (10..1000, default 500) times five.
func ioWeightSettings(dir string, w uint64) []cgroupSetting {
	if w == 0 {
		w = 100
	}
	bfq := w
	if w > 100 {
		bfq = 100 + (w-100)*900/9900
	}
	var sets []cgroupSetting
	for _, s := range []cgroupSetting{
		{"io.weight", "default " + strconv.FormatUint(w, 10)},
		{"io.bfq.weight", "default " + strconv.FormatUint(bfq, 10)},
		{"blkio.bfq.weight", strconv.FormatUint(bfq, 10)},
		{"blkio.weight", strconv.FormatUint(min(max(w*5, 10), 1000), 10)},
	} {
		f := filepath.Join(dir, s.file)
		if _, err := os.Stat(f); err == nil {
			sets = append(sets, cgroupSetting{f, s.val})
		}
	}
	return sets
}

// v1CpusetSettings set cpuset.cpus on the machine's cgroup and every cgroup
// below it (the supervisor's and the payload's, which copied it when they
// were made). A v1 cpuset must stay within its parent's, so the new set goes
// in two sweeps: the union of old and new top-down (nothing shrinks below a
// child), then the new set bottom-up. No cpuset means the parent's CPUs.
func v1CpusetSettings(dir string, cpus cpuset.Set) ([]cgroupSetting, error) {
	if cpus == nil {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "cpuset.cpus"))
		if err != nil {
			return nil, err
		}
		if cpus, err = cpuset.Parse(strings.TrimSpace(string(b))); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(filepath.Dir(dir), "cpuset.cpus"), err)
		}
	}
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	union := cpus
	if b, err := os.ReadFile(filepath.Join(dir, "cpuset.cpus")); err == nil {
		if old, err := cpuset.Parse(strings.TrimSpace(string(b))); err == nil {
			union = old.Union(cpus)
		}
	}
	var sets []cgroupSetting
	for _, d := range dirs {
		sets = append(sets, cgroupSetting{filepath.Join(d, "cpuset.cpus"), union.String()})
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		sets = append(sets, cgroupSetting{filepath.Join(dirs[i], "cpuset.cpus"), cpus.String()})
	}
	return sets, nil
}

// v2CpusetSettings: cgroup2 keeps each cgroup's effective CPUs within its
// parent's itself, so one write does; "" gives the parent's CPUs.
func v2CpusetSettings(dir string, cpus cpuset.Set) []cgroupSetting {
	return []cgroupSetting{{filepath.Join(dir, "cpuset.cpus"), cpus.String()}}
}

// mirrorThrottles copies the v1 blkio throttle limits of the machine's
// cgroup at path to every cgroup below it (the supervisor's, the payload's,
// any the guest made). On a v1 hierarchy blk-throttle is not hierarchical: a
// limit holds only for the processes of the cgroup it is written in, and the
// machine's processes all live in its children. Either driver sets the
// limits on the machine's cgroup (systemd on its scope); the supervisor calls
// this after the split and after each live update. cgroup2 needs nothing.
func mirrorThrottles(hs []hierarchy, path string) error {
	for _, h := range hs {
		if h.Unified || !h.has("blkio") {
			continue
		}
		top := h.dir(path)
		var below []string
		_ = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() && p != top {
				below = append(below, p)
			}
			return nil
		})
		for _, t := range v1Throttles {
			b, err := os.ReadFile(filepath.Join(top, t.file))
			if err != nil {
				continue // no blk-throttle in this kernel
			}
			want := map[string]bool{}
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				if f := strings.Fields(l); len(f) == 2 {
					want[f[0]] = true
					lines = append(lines, l)
				}
			}
			for _, d := range below {
				f := filepath.Join(d, t.file)
				for _, disk := range limitedDisks(f) {
					if !want[disk] {
						if err := writeFile(f, disk+" 0"); err != nil {
							return err
						}
					}
				}
				for _, l := range lines {
					if err := writeFile(f, l); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}
