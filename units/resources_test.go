package units

import (
	"fmt"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/cpuset"
)

// TestPlacementProperties: per-device limits as a(st) lists, each kind first
// emptied (systemd then drops that kind's old limits) and then listed, and
// the CPU set as AllowedCPUs' bit mask.
func TestPlacementProperties(t *testing.T) {
	cpus, _ := cpuset.Parse("0,9")
	ps, err := ResourceProperties(Resources{CPUSet: cpus, IO: []IOLimit{
		{Device: "/dev/vda", WriteBps: 1 << 20, ReadIOPS: 100},
		{Device: "/dev/sdb", WriteBps: 2 << 20},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		switch {
		case strings.HasPrefix(p.Name, "IO") && p.Name != "IOWeight":
			got = append(got, fmt.Sprintf("%s %s %v", p.Name, p.Value.Signature(), p.Value.Value()))
		case p.Name == "AllowedCPUs":
			got = append(got, fmt.Sprintf("%s %s %x", p.Name, p.Value.Signature(), p.Value.Value()))
		}
	}
	want := []string{
		"AllowedCPUs ay 0102",
		"IOReadBandwidthMax a(st) []",
		"IOWriteBandwidthMax a(st) []",
		"IOWriteBandwidthMax a(st) [{/dev/vda 1048576} {/dev/sdb 2097152}]",
		"IOReadIOPSMax a(st) []",
		"IOReadIOPSMax a(st) [{/dev/vda 100}]",
		"IOWriteIOPSMax a(st) []",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("properties:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
