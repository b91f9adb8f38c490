package units

import (
	"fmt"
	"math"
	"time"

	"github.com/berthd/berth/internal/cpuset"
	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Resources are a machine's limits in kernel terms, the same fields as
// container.Resources (units does not import container: machined converts). A
// zero field means no limit, or the default weight.
type Resources struct {
	MemoryMax  int64   // bytes
	MemoryHigh int64   // bytes
	CPUs       float64 // CPU quota in CPUs: 1.5 = 150% of one CPU
	CPUWeight  uint64  // 1..10000
	PidsMax    int64   // tasks
	IOWeight   uint64  // 1..10000
	IO         []IOLimit
	CPUSet     cpuset.Set // AllowedCPUs=; nil: every CPU
}

// IOLimit is one device's I/O limits; a zero field is no limit of that kind.
type IOLimit struct {
	Device              string // device node, e.g. /dev/vda (systemd resolves it)
	ReadBps, WriteBps   uint64
	ReadIOPS, WriteIOPS uint64
}

// unset is systemd's "infinity" for limits and "not set" for weights
// (CGROUP_LIMIT_MAX, CGROUP_WEIGHT_INVALID): (uint64_t) -1.
const unset = math.MaxUint64

// ResourceProperties converts r to the scope properties systemd applies to the
// machine's cgroup (systemctl set-property names in parentheses):
//
//	MemoryMax  → MemoryMax (bytes)          MemoryHigh → MemoryHigh (bytes)
//	CPUs       → CPUQuotaPerSecUSec (CPUQuota=150% is 1.5 CPUs = 1500000 µs/s)
//	CPUWeight  → CPUWeight                  PidsMax    → TasksMax
//	IOWeight   → IOWeight                   CPUSet     → AllowedCPUs (a bit mask)
//	IO         → IOReadBandwidthMax, IOWriteBandwidthMax, IOReadIOPSMax, IOWriteIOPSMax
//
// Every property is always present, a zero field as "infinity" or "unset", so the
// same list both creates a scope and, through SetUnitProperties, takes back a
// limit that a definition no longer declares. On this cgroup v1 hybrid kind of
// host systemd maps them to the v1 files itself (CPUWeight → cpu.shares, IOWeight
// → blkio.weight); MemoryHigh has no v1 equivalent and is ignored there.
func ResourceProperties(r Resources) ([]sddbus.Property, error) {
	if r.MemoryMax < 0 || r.MemoryHigh < 0 || r.PidsMax < 0 {
		return nil, fmt.Errorf("resources: memory and pids limits must not be negative")
	}
	if r.CPUs < 0 || math.IsNaN(r.CPUs) || math.IsInf(r.CPUs, 0) {
		return nil, fmt.Errorf("resources: cpus %v must be a positive number of CPUs", r.CPUs)
	}
	if r.CPUWeight != 0 && (r.CPUWeight < 1 || r.CPUWeight > 10000) {
		return nil, fmt.Errorf("resources: cpu weight %d is outside 1..10000", r.CPUWeight)
	}
	if r.IOWeight != 0 && (r.IOWeight < 1 || r.IOWeight > 10000) {
		return nil, fmt.Errorf("resources: io weight %d is outside 1..10000", r.IOWeight)
	}
	limit := func(v int64) uint64 {
		if v == 0 {
			return unset
		}
		return uint64(v)
	}
	weight := func(v uint64) uint64 {
		if v == 0 {
			return unset
		}
		return v
	}
	quota := uint64(unset)
	if r.CPUs > 0 {
		// Rounded to whole microseconds per second; systemd itself rounds the
		// kernel's period quota further (to 10 ms periods), so 1.5 CPUs shows as
		// CPUQuota=150% in systemctl.
		quota = uint64(math.Round(r.CPUs * float64(time.Second/time.Microsecond)))
		if quota == 0 {
			return nil, fmt.Errorf("resources: cpus %v is below one microsecond per second", r.CPUs)
		}
	}
	return append([]sddbus.Property{
		prop("MemoryMax", limit(r.MemoryMax)),
		prop("MemoryHigh", limit(r.MemoryHigh)),
		prop("CPUQuotaPerSecUSec", quota),
		prop("CPUWeight", weight(r.CPUWeight)),
		prop("TasksMax", limit(r.PidsMax)),
		prop("IOWeight", weight(r.IOWeight)),
		prop("AllowedCPUs", r.CPUSet.Mask()),
	}, ioProperties(r.IO)...), nil
}

// ioProperties are the per-device limits, each property twice: first empty,
// which makes systemd drop every limit of that kind (so SetUnitProperties
// takes back a device the definition no longer lists), then the list. A
// device without a limit of a kind is left out of that kind's list.
func ioProperties(io []IOLimit) []sddbus.Property {
	type entry struct {
		Path  string
		Limit uint64
	}
	var props []sddbus.Property
	for _, k := range []struct {
		name string
		of   func(IOLimit) uint64
	}{
		{"IOReadBandwidthMax", func(l IOLimit) uint64 { return l.ReadBps }},
		{"IOWriteBandwidthMax", func(l IOLimit) uint64 { return l.WriteBps }},
		{"IOReadIOPSMax", func(l IOLimit) uint64 { return l.ReadIOPS }},
		{"IOWriteIOPSMax", func(l IOLimit) uint64 { return l.WriteIOPS }},
	} {
		list := []entry{}
		for _, l := range io {
			if v := k.of(l); v > 0 {
				list = append(list, entry{l.Device, v})
			}
		}
		props = append(props, prop(k.name, []entry{}))
		if len(list) > 0 {
			props = append(props, prop(k.name, list))
		}
	}
	return props
}

func prop(name string, v any) sddbus.Property {
	return sddbus.Property{Name: name, Value: dbus.MakeVariant(v)}
}
