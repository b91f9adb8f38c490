package container

import "context"

// Resources are a machine's resource limits in kernel terms. A zero field means
// "no limit" (or the kernel's default weight).
type Resources struct {
	MemoryMax  int64   `json:"memoryMax,omitempty"`  // bytes (memory.max / memory.limit_in_bytes)
	MemoryHigh int64   `json:"memoryHigh,omitempty"` // bytes (memory.high; v1: soft limit)
	CPUs       float64 `json:"cpus,omitempty"`       // CPU quota in CPUs: 1.5 = 150% of one CPU
	CPUWeight  uint64  `json:"cpuWeight,omitempty"`  // 1..10000, v2 scale (v1 shares derived)
	PidsMax    int64   `json:"pidsMax,omitempty"`    // pids.max
	IOWeight   uint64  `json:"ioWeight,omitempty"`   // 1..10000 (io.weight / blkio.weight)
}

// CgroupMachine describes the machine a CgroupDriver makes a cgroup for.
type CgroupMachine struct {
	Name        string    // machine name
	UUID        string    // machine UUID, 32 hex digits
	Description string    // e.g. "berth machine web"
	PID         int       // the supervisor, moved into the new cgroup
	Resources   Resources // limits applied at creation
}

// CgroupDriver places a machine in a cgroup of its own and applies its limits.
// The supervisor then splits that cgroup into "supervisor" and "payload"
// children (a delegated subtree) and gives the payload a cgroup namespace rooted
// at "payload".
//
// Two drivers exist: the cgroupfs driver of this package, which writes cgroup
// files directly (hosts without systemd), and the systemd driver of package units,
// which creates a transient machine-NAME.scope with Delegate=yes and sets limits as
// scope properties. machined chooses and wires the driver.
type CgroupDriver interface {
	// Name is "cgroupfs" or "systemd".
	Name() string
	// Create makes the machine's cgroup with its limits and moves m.PID into it
	// (none when m.PID is 0: the cgroupfs driver's caller places itself).
	// It returns the cgroup's path below each hierarchy's root, the same in every
	// hierarchy (e.g. "/machine.slice/machine-web.scope").
	Create(ctx context.Context, m CgroupMachine) (path string, err error)
	// Update changes the limits of a running machine's cgroup in place.
	Update(ctx context.Context, name, path string, r Resources) error
	// Destroy removes the machine's cgroup once its processes are gone.
	Destroy(ctx context.Context, name, path string) error
}
