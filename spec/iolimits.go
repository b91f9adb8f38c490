package spec

import (
	"fmt"
	"path/filepath"
	"strings"
)

// validateIOLimits checks resources.io: each device an absolute path under
// /dev, listed once, with at least one limit. Whether the device exists is
// checked where the machine starts (a definition may be planned elsewhere).
func validateIOLimits(d *doc, io []IOLimit) {
	seen := map[string]int{}
	for i, l := range io {
		f := fmt.Sprintf("resources.io[%d]", i)
		switch dev := l.Device; {
		case dev == "":
			d.errorf(f+".device", "is required: the block device node to limit, for example /dev/vda")
		case !strings.HasPrefix(dev, "/dev/") || filepath.Clean(dev) != dev:
			d.errorf(f+".device", "%q is not a device node: give a clean absolute path under /dev, for example /dev/vda", dev)
		default:
			if j, dup := seen[dev]; dup {
				d.errorf(f+".device", "%s is already limited by resources.io[%d]; put all of a device's limits in one entry", dev, j)
			}
			seen[dev] = i
		}
		written := false
		for _, v := range []struct {
			field string
			n     int64
		}{{"readBandwidth", int64(l.ReadBandwidth)}, {"writeBandwidth", int64(l.WriteBandwidth)}, {"readIOPS", int64(l.ReadIOPS)}, {"writeIOPS", int64(l.WriteIOPS)}} {
			if !d.has(f + "." + v.field) {
				continue
			}
			written = true
			if v.n <= 0 {
				d.errorf(f+"."+v.field, "must be greater than 0; remove it for no limit")
			}
		}
		if !written {
			d.errorf(f, "limits nothing: give readBandwidth, writeBandwidth, readIOPS or writeIOPS")
		}
	}
}
