package container

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berthd/berth/internal/revert"
)

// hierarchy is one mounted cgroup hierarchy of the host.
type hierarchy struct {
	Mount       string   // e.g. /sys/fs/cgroup/memory or /sys/fs/cgroup/unified
	Unified     bool     // cgroup2
	Controllers []string // v1: the controllers bound to it ("name=systemd" included)
}

func (h hierarchy) has(c string) bool {
	for _, x := range h.Controllers {
		if x == c {
			return true
		}
	}
	return false
}

// dir is the directory of the cgroup at path (below the hierarchy's root).
func (h hierarchy) dir(path string) string { return filepath.Join(h.Mount, path) }

var (
	hierOnce sync.Once
	hierList []hierarchy
	hierErr  error
)

// hierarchies lists the host's cgroup hierarchies (v1 controllers, named
// hierarchies, the unified one) from /proc/self/mountinfo, once per process.
func hierarchies() ([]hierarchy, error) {
	hierOnce.Do(func() { hierList, hierErr = readHierarchies("/proc/self/mountinfo") })
	return hierList, hierErr
}

func readHierarchies(mountinfo string) ([]hierarchy, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("cgroup hierarchies: %w", err)
	}
	defer f.Close()
	var hs []hierarchy
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		h, key, ok := parseCgroupMount(sc.Text())
		if !ok || seen[key] {
			continue
		}
		seen[key] = true
		hs = append(hs, h)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cgroup hierarchies: %s: %w", mountinfo, err)
	}
	if len(hs) == 0 {
		return nil, errors.New("cgroup hierarchies: no cgroup filesystem is mounted (mount cgroup2 on /sys/fs/cgroup)")
	}
	return hs, nil
}

// parseCgroupMount reads one mountinfo line; ok is false for anything but the
// root of a cgroup or cgroup2 mount. key identifies the hierarchy (a hierarchy
// mounted twice is listed once).
func parseCgroupMount(line string) (h hierarchy, key string, ok bool) {
	pre, post, found := strings.Cut(line, " - ")
	if !found {
		return h, "", false
	}
	f := strings.Fields(pre)
	p := strings.Fields(post)
	if len(f) < 5 || len(p) < 3 || f[3] != "/" {
		return h, "", false
	}
	switch p[0] {
	case "cgroup2":
		return hierarchy{Mount: unescapeMountinfo(f[4]), Unified: true}, "cgroup2", true
	case "cgroup":
		var ctrls []string
		for _, o := range strings.Split(p[2], ",") {
			switch {
			case o == "rw" || o == "ro" || strings.HasPrefix(o, "release_agent=") || o == "clone_children" || o == "noprefix" || o == "xattr":
			default:
				ctrls = append(ctrls, o)
			}
		}
		if len(ctrls) == 0 {
			return h, "", false
		}
		return hierarchy{Mount: unescapeMountinfo(f[4]), Controllers: ctrls}, strings.Join(ctrls, ","), true
	}
	return h, "", false
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// CgroupfsDriver writes cgroup files directly: the driver for hosts without
// systemd. A machine's cgroup is Parent/NAME (default /berth/NAME) in every
// hierarchy; limits go to it, so they cover the supervisor and the payload
// together, as limits on nspawn's scope do.
type CgroupfsDriver struct {
	Parent string // default "/berth"
}

var _ CgroupDriver = CgroupfsDriver{}

func (CgroupfsDriver) Name() string { return "cgroupfs" }

func (d CgroupfsDriver) path(name string) string {
	p := d.Parent
	if p == "" {
		p = "/berth"
	}
	return filepath.Join("/", p, name)
}

// Create makes Parent/NAME in every hierarchy, applies the limits and places
// the device fence there. A leftover empty cgroup of a machine that ended
// uncleanly is reused; one that still has processes is refused.
func (d CgroupfsDriver) Create(ctx context.Context, m CgroupMachine) (Cgroup, error) {
	hs, err := hierarchies()
	if err != nil {
		return Cgroup{}, err
	}
	path := d.path(m.Name)
	r := revert.New()
	defer r.Fail()
	fail := func(err error) (Cgroup, error) {
		return Cgroup{}, fmt.Errorf("machine %q: cgroup %s: %w", m.Name, path, err)
	}
	for _, h := range hs {
		dir := h.dir(path)
		if n, _ := countProcs(dir); n > 0 {
			return fail(fmt.Errorf("%s still has %d processes: is the machine running already?", dir, n))
		}
		created, err := mkdirCgroup(h, dir)
		if err != nil {
			return fail(err)
		}
		if created {
			r.Add(func() { _ = removeCgroupTree(dir) })
		}
	}
	for _, h := range hs {
		if h.Unified {
			delegateControllers(h, path)
		}
	}
	if err := applyResources(hs, path, m.Resources); err != nil {
		return fail(err)
	}
	cg := Cgroup{Path: path}
	if m.Devices != nil {
		fence, bpfErr, err := placeDeviceFence(hs, path, m.Devices)
		if err != nil {
			return fail(err)
		}
		cg.DeviceFence, cg.FenceIsBPF = fence, strings.HasPrefix(fence, "bpf")
		if bpfErr != nil {
			cg.NoBPF = bpfErr.Error()
		}
	}
	r.Success()
	return cg, nil
}

// Update writes new limits in place; nothing restarts.
func (d CgroupfsDriver) Update(ctx context.Context, name, path string, r Resources) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	if err := applyResources(hs, path, r); err != nil {
		return fmt.Errorf("machine %q: update limits of %s: %w", name, path, err)
	}
	return nil
}

// Destroy removes the machine's cgroup tree in every hierarchy (the guest's own
// sub-cgroups included) once its processes are gone.
func (d CgroupfsDriver) Destroy(ctx context.Context, name, path string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	// Each hierarchy's tree at once: an rmdir waits for the kernel to take
	// the cgroup offline, and eleven hierarchies one after another made up
	// most of a stop's teardown.
	errs := make([]error, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = removeCgroupTree(h.dir(path))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("machine %q: remove cgroup: %w", name, err)
	}
	return nil
}

// mkdirCgroup makes dir and its missing parents in h, and reports whether it
// made dir itself. On a v1 cpuset hierarchy a new cgroup starts with empty
// cpuset.cpus and cpuset.mems (unless clone_children), and no task can join
// it until both are set: every level, the ones that already exist included,
// gets its parent's values when it has none. Machines start in parallel, each
// in its own supervisor process, and the first of them makes the shared
// parent (/berth): a level another process has just made may still be empty,
// so "it exists" never means "it is ready". Filling it again is idempotent and
// goes top-down, so each level copies from a parent that is already filled.
func mkdirCgroup(h hierarchy, dir string) (created bool, err error) {
	rel, err := filepath.Rel(h.Mount, dir)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return false, fmt.Errorf("cgroup %s is not below %s", dir, h.Mount)
	}
	cur := h.Mount
	for _, part := range strings.Split(rel, "/") {
		parent := cur
		cur = filepath.Join(cur, part)
		err := os.Mkdir(cur, 0o755)
		switch {
		case err == nil:
			created = cur == dir
		case errors.Is(err, fs.ErrExist):
			created = false
		default:
			return false, fmt.Errorf("mkdir %s: %w", cur, err)
		}
		if !h.Unified && h.has("cpuset") {
			if err := inheritCpuset(parent, cur); err != nil {
				return created, err
			}
		}
	}
	return created, nil
}

// inheritCpuset copies cpuset.cpus and cpuset.mems from parent to dir where
// dir has none yet.
func inheritCpuset(parent, dir string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("read %s: %w", filepath.Join(dir, f), err)
		}
		if strings.TrimSpace(string(cur)) != "" {
			continue
		}
		v, err := os.ReadFile(filepath.Join(parent, f))
		if err != nil {
			return fmt.Errorf("read %s: %w", filepath.Join(parent, f), err)
		}
		if strings.TrimSpace(string(v)) == "" {
			return fmt.Errorf("%s is empty: no CPUs or memory nodes to give %s", filepath.Join(parent, f), dir)
		}
		if err := writeFile(filepath.Join(dir, f), strings.TrimSpace(string(v))); err != nil {
			return err
		}
	}
	return nil
}

// delegateControllers enables, on a cgroup2 hierarchy, every controller the
// root offers in the subtree_control of each ancestor of path, so the machine's
// cgroup has memory, pids, cpu and io files for its limits. systemd does this
// on its hosts; on a host without it nobody else will. The machine's own
// subtree_control is left to the supervisor (it may hold a process until the
// split). A controller that cannot be enabled is skipped: its limits are then
// not applied, as on this kernel's hybrid layout.
func delegateControllers(h hierarchy, path string) {
	dir := h.Mount
	for _, part := range strings.Split(strings.Trim(filepath.Dir(path), "/"), "/") {
		ctrls, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		for _, c := range strings.Fields(string(ctrls)) {
			_ = os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0)
		}
		if part == "" {
			break
		}
		dir = filepath.Join(dir, part)
	}
	ctrls, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	for _, c := range strings.Fields(string(ctrls)) {
		_ = os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0)
	}
}

// movePID moves a whole process into path in every hierarchy.
func movePID(hs []hierarchy, path string, pid int) error {
	for _, h := range hs {
		f := filepath.Join(h.dir(path), "cgroup.procs")
		if err := writeFile(f, strconv.Itoa(pid)); err != nil {
			if errors.Is(err, syscall.ENOSPC) && !h.Unified && h.has("cpuset") {
				// The kernel's word for "this cpuset has no CPUs or memory nodes".
				return fmt.Errorf("%w (cpuset.cpus or cpuset.mems of %s or a parent is empty)", err, h.dir(path))
			}
			return err
		}
	}
	return nil
}

func writeFile(path, val string) error {
	if err := os.WriteFile(path, []byte(val), 0); err != nil {
		return fmt.Errorf("write %q to %s: %w", val, path, err)
	}
	return nil
}

// applyResources writes r to the cgroup at path: v1 controller files where a v1
// hierarchy has the controller, cgroup2 files where the unified hierarchy has it
// enabled. A zero field resets the limit.
func applyResources(hs []hierarchy, path string, r Resources) error {
	p, err := resolvePlacement(r)
	if err != nil {
		return err
	}
	var sets []cgroupSetting
	for _, h := range hs {
		if h.Unified {
			sets = append(sets, v2Settings(h.dir(path), r, p)...)
		} else {
			s, err := v1Settings(h, h.dir(path), r, p)
			if err != nil {
				return err
			}
			sets = append(sets, s...)
		}
	}
	for _, s := range sets {
		if err := writeFile(s.file, s.val); err != nil {
			return err
		}
	}
	return nil
}

// cgroupSetting is one value for one cgroup file.
type cgroupSetting struct{ file, val string }

// limitOr is v as a limit, or unlimited (v2: "max", v1: "-1") for 0.
func limitOr(v int64, unlimited string) string {
	if v <= 0 {
		return unlimited
	}
	return strconv.FormatInt(v, 10)
}

// v2Settings are r's files in a cgroup2 cgroup dir, for the controllers it
// has.
func v2Settings(dir string, r Resources, p placement) []cgroupSetting {
	ctrls, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	on := " " + strings.TrimSpace(string(ctrls)) + " "
	var sets []cgroupSetting
	set := func(file, val string) { sets = append(sets, cgroupSetting{filepath.Join(dir, file), val}) }
	if strings.Contains(on, " memory ") {
		set("memory.max", limitOr(r.MemoryMax, "max"))
		set("memory.high", limitOr(r.MemoryHigh, "max"))
	}
	if strings.Contains(on, " pids ") {
		set("pids.max", limitOr(r.PidsMax, "max"))
	}
	if strings.Contains(on, " cpu ") {
		q := "max 100000"
		if r.CPUs > 0 {
			q = fmt.Sprintf("%d 100000", int64(r.CPUs*100000))
		}
		set("cpu.max", q)
		set("cpu.weight", strconv.FormatUint(cmp.Or(r.CPUWeight, 100), 10))
	}
	if strings.Contains(on, " io ") {
		sets = append(sets, ioWeightSettings(dir, r.IOWeight)...)
		sets = append(sets, v2IOSettings(dir, p)...)
	}
	if strings.Contains(on, " cpuset ") {
		sets = append(sets, v2CpusetSettings(dir, p.cpus)...)
	}
	return sets
}

// v1Settings are r's files in the v1 hierarchy h's cgroup dir.
func v1Settings(h hierarchy, dir string, r Resources, p placement) ([]cgroupSetting, error) {
	var sets []cgroupSetting
	set := func(file, val string) { sets = append(sets, cgroupSetting{filepath.Join(dir, file), val}) }
	switch {
	case h.has("memory"):
		// The soft limit first: the kernel refuses a hard limit below it.
		set("memory.soft_limit_in_bytes", limitOr(r.MemoryHigh, "-1"))
		set("memory.limit_in_bytes", limitOr(r.MemoryMax, "-1"))
	case h.has("pids"):
		set("pids.max", limitOr(r.PidsMax, "max"))
	case h.has("blkio"):
		sets = append(sets, ioWeightSettings(dir, r.IOWeight)...)
		sets = append(sets, v1ThrottleSettings(dir, p)...)
	case h.has("cpuset"):
		s, err := v1CpusetSettings(dir, p.cpus)
		if err != nil {
			return nil, err
		}
		sets = append(sets, s...)
	}
	if h.has("cpu") {
		q := "-1"
		if r.CPUs > 0 {
			q = strconv.FormatInt(int64(r.CPUs*100000), 10)
		}
		set("cpu.cfs_period_us", "100000")
		set("cpu.cfs_quota_us", q)
		set("cpu.shares", strconv.FormatUint(cmp.Or(r.CPUWeight, 100)*1024/100, 10))
	}
	return sets, nil
}

// countProcs counts the processes in dir and below it (0 when dir is missing).
func countProcs(dir string) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		n += len(strings.Fields(string(b)))
		return nil
	})
	return n, err
}

// pidsIn lists the processes in dir and below it.
func pidsIn(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// removeCgroupTree removes dir and every cgroup below it, deepest first. A
// cgroup whose last process is still exiting reports EBUSY for a moment: retry
// for up to two seconds.
func removeCgroupTree(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	deadline := time.Now().Add(2 * time.Second)
	for i := len(dirs) - 1; i >= 0; i-- {
		for {
			err := syscall.Rmdir(dirs[i])
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if errors.Is(err, syscall.EBUSY) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return &os.PathError{Op: "rmdir", Path: dirs[i], Err: err}
		}
	}
	return nil
}

// ResourceUsage is a machine's current resource use, read from its cgroup.
type ResourceUsage struct {
	MemoryBytes int64         `json:"memoryBytes"`
	Pids        int64         `json:"pids"`
	CPU         time.Duration `json:"cpu"` // CPU time used since the cgroup was made
}

// Usage reads memory, pids and CPU use of the cgroup at path (as the driver
// returned it) from whichever hierarchy has each controller, v1 or v2.
func Usage(path string) (ResourceUsage, error) {
	hs, err := hierarchies()
	if err != nil {
		return ResourceUsage{}, err
	}
	var u ResourceUsage
	found := false
	readInt := func(f string) (int64, bool) {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, false
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return v, err == nil
	}
	for _, h := range hs {
		dir := h.dir(path)
		if h.Unified {
			if v, ok := readInt(filepath.Join(dir, "memory.current")); ok {
				u.MemoryBytes, found = v, true
			}
			if v, ok := readInt(filepath.Join(dir, "pids.current")); ok {
				u.Pids, found = v, true
			}
			if b, err := os.ReadFile(filepath.Join(dir, "cpu.stat")); err == nil {
				for _, l := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
						n, _ := strconv.ParseInt(v, 10, 64)
						u.CPU, found = time.Duration(n)*time.Microsecond, true
					}
				}
			}
			continue
		}
		if h.has("memory") {
			if v, ok := readInt(filepath.Join(dir, "memory.usage_in_bytes")); ok {
				u.MemoryBytes, found = v, true
			}
		}
		if h.has("pids") {
			if v, ok := readInt(filepath.Join(dir, "pids.current")); ok {
				u.Pids, found = v, true
			}
		}
		if h.has("cpuacct") {
			if v, ok := readInt(filepath.Join(dir, "cpuacct.usage")); ok {
				u.CPU, found = time.Duration(v), true
			}
		}
	}
	if !found {
		return u, fmt.Errorf("cgroup %s: no usage figures found (does the machine run?)", path)
	}
	return u, nil
}
