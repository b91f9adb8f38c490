package container

import "context"

// Resources are a machine's resource limits in kernel terms. A zero field means
// "no limit" (or the kernel's default weight).
type Resources struct {
	MemoryMax  int64     `json:"memoryMax,omitempty"`  // bytes (memory.max / memory.limit_in_bytes)
	MemoryHigh int64     `json:"memoryHigh,omitempty"` // bytes (memory.high; v1: soft limit)
	CPUs       float64   `json:"cpus,omitempty"`       // CPU quota in CPUs: 1.5 = 150% of one CPU
	CPUWeight  uint64    `json:"cpuWeight,omitempty"`  // 1..10000, v2 scale (v1 shares derived)
	PidsMax    int64     `json:"pidsMax,omitempty"`    // pids.max
	IOWeight   uint64    `json:"ioWeight,omitempty"`   // 1..10000 (io.weight / blkio.weight)
	IO         []IOLimit `json:"io,omitempty"`         // per device (io.max / blkio.throttle.*)
	CPUSet     string    `json:"cpuset,omitempty"`     // CPU list (cpuset.cpus), "" the parent's
}

// CgroupMachine describes the machine a CgroupDriver makes a cgroup for.
type CgroupMachine struct {
	Name        string    // machine name
	UUID        string    // machine UUID, 32 hex digits
	Description string    // e.g. "berth machine web"
	PID         int       // the supervisor (the systemd driver makes the scope with it)
	Resources   Resources // limits applied at creation
	// Devices is the device policy for the machine's cgroup: the driver places
	// it there, one level above the guest's cgroup namespace, where the guest
	// cannot change it.
	Devices []DeviceRule
}

// Cgroup is the cgroup a driver made for a machine.
type Cgroup struct {
	// Path is below each hierarchy's root, the same in every hierarchy (e.g.
	// "/machine.slice/machine-web.scope").
	Path string
	// DeviceFence says what device policy the driver placed on it ("" none):
	// "bpf+v1 on /berth/web", "systemd DevicePolicy=closed".
	DeviceFence string
	// FenceIsBPF is true when the fence is a BPF device program of berth's own
	// on the machine's cgroup2 cgroup; otherwise the supervisor adds one on the
	// payload cgroup too.
	FenceIsBPF bool
	// NoBPF says why no BPF device program could be attached, when none was.
	NoBPF string
}

// CgroupDriver places a machine in a cgroup of its own, applies its limits and
// fences its devices. The supervisor then splits that cgroup into
// "supervisor" and "payload" children (a delegated subtree) and gives the
// payload a cgroup namespace rooted at "payload".
//
// Two drivers exist: the cgroupfs driver of this package, which writes cgroup
// files directly (hosts without systemd), and the systemd driver, which
// creates a transient machine-NAME.scope with Delegate=yes and sets limits and
// the device policy as scope properties. machined chooses and wires the driver.
type CgroupDriver interface {
	// Name is "cgroupfs" or "systemd" (shown in state.json).
	Name() string
	// Create makes the machine's cgroup with its limits and device policy. The
	// systemd driver moves m.PID into it; the cgroupfs driver leaves the
	// supervisor where it is (it moves itself straight into its own child:
	// every v1 migration waits for an RCU grace period, per hierarchy).
	Create(ctx context.Context, m CgroupMachine) (Cgroup, error)
	// Update changes the limits of a running machine's cgroup in place.
	Update(ctx context.Context, name, path string, r Resources) error
	// Destroy removes the machine's cgroup once its processes are gone.
	Destroy(ctx context.Context, name, path string) error
}
