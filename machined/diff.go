package machined

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/berthd/berth/spec"
)

// machineDiff is how a running machine's definition differs from the declared one,
// sorted by what the change needs.
type machineDiff struct {
	live    []string // resource limits: changed in the cgroup, nothing restarts
	ports   []string // port forwards: the nftables table changes, nothing restarts
	restart []string // everything the running guest was started with
	later   []string // takes effect at the next start or exit (stop timeout, restart policy)
}

func (d machineDiff) empty() bool {
	return len(d.live)+len(d.ports)+len(d.restart)+len(d.later) == 0
}

// diffMachine compares the definition a machine runs with (old) to the declared
// one (new). The state and the image are not compared here: the planner handles
// them on their own.
func diffMachine(old, new *spec.Machine) machineDiff {
	var d machineDiff
	d.live = diffJSON("resources", old.Resources, new.Resources)
	d.ports = diffJSON("network.ports", old.Network.Ports, new.Network.Ports)
	d.later = append(diffJSON("restart", old.Restart, new.Restart),
		diffJSON("stopTimeout", old.StopTimeout, new.StopTimeout)...)
	d.later = append(d.later, diffJSON("root.onImageChange", old.Root.OnImageChange, new.Root.OnImageChange)...)
	d.restart = diffJSON("", restartRelevant(old), restartRelevant(new))
	return d
}

// restartRelevant is a copy of m without the fields whose change needs no
// restart (or that the planner treats separately).
func restartRelevant(m *spec.Machine) spec.Machine {
	c := *m
	c.Source = spec.Source{}
	c.State = ""
	c.Image = ""
	c.Resources = spec.Resources{}
	c.Network.Ports = nil
	c.Restart = spec.Restart{}
	c.StopTimeout = 0
	c.Root.OnImageChange = ""
	return c
}

// diffJSON lists the leaves that differ between a and b, named by their JSON
// path under prefix: "resources.memoryMax: 512M → 1G".
func diffJSON(prefix string, a, b any) []string {
	var va, vb any
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) == string(jb) {
		return nil
	}
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	var out []string
	diffTree(prefix, va, vb, &out)
	sort.Strings(out)
	return out
}

func diffTree(path string, a, b any, out *[]string) {
	ma, oka := a.(map[string]any)
	mb, okb := b.(map[string]any)
	if oka && okb {
		keys := map[string]bool{}
		for k := range ma {
			keys[k] = true
		}
		for k := range mb {
			keys[k] = true
		}
		for k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			diffTree(p, ma[k], mb[k], out)
		}
		return
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) == string(jb) {
		return
	}
	*out = append(*out, fmt.Sprintf("%s: %s → %s", path, show(a), show(b)))
}

func show(v any) string {
	if v == nil {
		return "(unset)"
	}
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return strings.ReplaceAll(string(b), `"`, "")
}
