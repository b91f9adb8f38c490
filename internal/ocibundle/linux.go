package ocibundle

import (
	"fmt"
	"path"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/cpuset"
)

// rangeSize is the size of a machine's range of user and group IDs.
const rangeSize = 65536

// namespaces checks linux.namespaces against the ones berth makes: always
// pid, mount, ipc, uts and cgroup; network unless the machine shares the
// host's network (no network namespace); user when the bundle has one. A
// missing cgroup namespace is accepted: berth's own gives the process the
// view of its cgroup that a runtime's /sys/fs/cgroup mount gives it (runc
// spec leaves it out).
func (c *conv) namespaces(l specs.Linux) {
	known := map[specs.LinuxNamespaceType]bool{specs.PIDNamespace: true, specs.NetworkNamespace: true, specs.MountNamespace: true,
		specs.IPCNamespace: true, specs.UTSNamespace: true, specs.UserNamespace: true, specs.CgroupNamespace: true}
	has := map[specs.LinuxNamespaceType]bool{}
	for i, ns := range l.Namespaces {
		field := fmt.Sprintf("linux.namespaces[%d].type", i)
		switch {
		case ns.Type == specs.TimeNamespace:
			c.fail(field, "%q: not supported by berth (a machine shares the host's clocks)", ns.Type)
		case !known[ns.Type]:
			c.fail(field, "%q: want pid, network, mount, ipc, uts, user or cgroup", ns.Type)
		case has[ns.Type]:
			c.fail(field, "%q given twice", ns.Type)
		}
		has[ns.Type] = true
	}
	for _, t := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.IPCNamespace, specs.UTSNamespace} {
		if !has[t] {
			c.fail("linux.namespaces", "no %q namespace: berth always gives a machine one of its own; add {\"type\": %q}", t, t)
		}
	}
	c.b.Config.NetworkMode = "host"
	if has[specs.NetworkNamespace] {
		c.b.Config.NetworkMode = "private"
	}
	c.idMappings(l, has[specs.UserNamespace])
}

// idMappings takes linux.uidMappings and gidMappings: berth maps a machine's
// IDs 0…65535 to one range of 65536 host IDs that starts at a multiple of
// 65536, the same for users and groups. A user namespace without mappings
// gets a range berth picks.
func (c *conv) idMappings(l specs.Linux, userNS bool) {
	if !userNS {
		for _, m := range []struct {
			field string
			ids   []specs.LinuxIDMapping
		}{{"linux.uidMappings", l.UIDMappings}, {"linux.gidMappings", l.GIDMappings}} {
			if len(m.ids) > 0 {
				c.fail(m.field, "given without a user namespace: add {\"type\": \"user\"} to linux.namespaces, or leave the mappings out")
			}
		}
		return
	}
	if len(l.UIDMappings) == 0 && len(l.GIDMappings) == 0 {
		c.b.UserNS = &UserNS{}
		return
	}
	uid, okU := c.idRange("linux.uidMappings", l.UIDMappings)
	gid, okG := c.idRange("linux.gidMappings", l.GIDMappings)
	if !okU || !okG {
		return
	}
	if uid != gid {
		c.fail("linux.gidMappings", "host IDs from %d, but uidMappings' from %d: berth maps users and groups to the same range", gid, uid)
		return
	}
	c.b.UserNS = &UserNS{HostID: uid}
}

// idRange is the first host ID of a mapping berth can make, or false after
// saying why not.
func (c *conv) idRange(field string, m []specs.LinuxIDMapping) (uint32, bool) {
	if len(m) == 1 && m[0].ContainerID == 0 && m[0].Size == rangeSize && m[0].HostID > 0 && m[0].HostID%rangeSize == 0 {
		return m[0].HostID, true
	}
	var got []string
	for _, e := range m {
		got = append(got, fmt.Sprintf("{containerID %d, hostID %d, size %d}", e.ContainerID, e.HostID, e.Size))
	}
	c.fail(field, "[%s]: berth maps a machine's IDs 0…65535 to one range of 65536 host IDs starting at a multiple of 65536 above 0, "+
		"the same for uidMappings and gidMappings; give {\"containerID\": 0, \"hostID\": N*65536, \"size\": 65536}, "+
		"or leave both out for berth to pick a range", strings.Join(got, ", "))
	return 0, false
}

// resources converts linux.resources into the machine's cgroup limits, in
// the cgroup v2 terms berth writes (cpu shares and blkio weight as runc
// converts them).
func (c *conv) resources(r *specs.LinuxResources) {
	if r == nil {
		return
	}
	res := &c.b.Config.Resources
	const at = "linux.resources."
	if m := r.Memory; m != nil && m.Limit != nil {
		switch l := *m.Limit; {
		case l > 0:
			res.MemoryMax = l
		case l < -1:
			c.fail(at+"memory.limit", "%d: want bytes, or -1 for no limit", l)
		}
	}
	c.cpu(r.CPU)
	if p := r.Pids; p != nil && p.Limit != nil {
		switch l := *p.Limit; {
		case l > 0:
			res.PidsMax = l
		case l < 0:
			c.fail(at+"pids.limit", "%d: berth always limits a machine's tasks; give a number (without one, berth's default of %d)", l, container.DefaultPidsMax)
		}
	}
	if b := r.BlockIO; b != nil && b.Weight != nil && *b.Weight != 0 {
		w := uint64(*b.Weight)
		if w < 10 || w > 1000 {
			c.fail(at+"blockIO.weight", "%d: want 10…1000", w)
		} else {
			res.IOWeight = 1 + (w-10)*9999/990
		}
	}
	c.devices(r.Devices)
}

// cpu converts linux.resources.cpu: quota/period as a number of CPUs
// (berth writes it per 100 ms period), shares as a weight.
func (c *conv) cpu(cpu *specs.LinuxCPU) {
	if cpu == nil {
		return
	}
	const at = "linux.resources.cpu."
	res := &c.b.Config.Resources
	period := uint64(100000)
	if cpu.Period != nil && *cpu.Period != 0 {
		period = *cpu.Period
	}
	switch {
	case cpu.Quota != nil && *cpu.Quota > 0:
		res.CPUs = float64(*cpu.Quota) / float64(period)
	case cpu.Quota != nil && *cpu.Quota < -1:
		c.fail(at+"quota", "%d: want microseconds per period, or -1 for no limit", *cpu.Quota)
	case cpu.Period != nil && *cpu.Period != 0:
		c.fail(at+"period", "without a quota it sets no limit; berth takes the two together")
	}
	if cpu.Shares != nil && *cpu.Shares != 0 {
		s := *cpu.Shares
		if s < 2 || s > 262144 {
			c.fail(at+"shares", "%d: want 2…262144", s)
		} else {
			res.CPUWeight = 1 + (s-2)*9999/262142
		}
	}
	if cpu.Cpus != "" {
		if set, err := cpuset.Parse(cpu.Cpus); err != nil {
			c.fail(at+"cpus", "%v", err)
		} else {
			res.CPUSet = set.String()
		}
	}
}

// devices accepts the device rules that berth's own device policy already
// carries out: denying everything, and allowing character devices berth
// allows anyway.
func (c *conv) devices(rules []specs.LinuxDeviceCgroup) {
	own := container.DeviceRules(true)
	for i, d := range rules {
		field := fmt.Sprintf("linux.resources.devices[%d]", i)
		wild := func(n *int64) bool { return n == nil || *n == -1 }
		if !d.Allow {
			if (d.Type == "" || d.Type == "a") && wild(d.Major) && wild(d.Minor) && (d.Access == "" || d.Access == "rwm") {
				continue
			}
			c.fail(field, "berth's device policy denies every device but its own; a rule that denies some only is not supported")
			continue
		}
		ok := d.Type == "c" && !wild(d.Major) && strings.Trim(d.Access, "rwm") == ""
		if ok {
			ok = false
			for _, r := range own {
				if r.Major == *d.Major && (r.Minor == -1 || (!wild(d.Minor) && r.Minor == *d.Minor)) {
					ok = true
				}
			}
		}
		if !ok {
			c.fail(field, "allows a device berth does not give a machine; berth allows only its own: null, zero, full, random, urandom, tty, ptmx, ptys (136:*), net/tun")
		}
	}
}

// masks takes linux.maskedPaths and readonlyPaths; berth masks paths below
// /proc and /sys only (on top of its own masks).
func (c *conv) masks(l specs.Linux) {
	for _, m := range []struct {
		field string
		paths []string
	}{{"linux.maskedPaths", l.MaskedPaths}, {"linux.readonlyPaths", l.ReadonlyPaths}} {
		for i, p := range m.paths {
			if path.Clean(p) != p || !(strings.HasPrefix(p, "/proc/") || strings.HasPrefix(p, "/sys/")) {
				c.fail(fmt.Sprintf("%s[%d]", m.field, i), "%q: berth masks and makes read-only only paths below /proc and /sys", p)
			}
		}
	}
	c.b.Config.MaskedPaths, c.b.Config.ReadOnlyPaths = l.MaskedPaths, l.ReadonlyPaths
}
