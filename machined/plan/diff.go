package plan

import (
	"encoding/json"
	"fmt"
	"reflect"
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

// diffMachine compares the definition a machine runs with (old) to the declared
// one (new). The state and the image are not compared here: the planner handles
// them on their own.
func diffMachine(old, new *spec.Machine) machineDiff {
	var d machineDiff
	d.live = diffJSON("resources", old.Resources, new.Resources)
	d.ports = append(diffJSON("network.ports", old.Network.Ports, new.Network.Ports),
		diffJSON("network.antiSpoofing", old.Network.Guarded(), new.Network.Guarded())...)
	d.later = append(diffJSON("restart", laterRestart(old.Restart), laterRestart(new.Restart)),
		diffJSON("stopTimeout", old.StopTimeout, new.StopTimeout)...)
	d.later = append(d.later, diffJSON("root.onImageChange", old.Root.OnImageChange, new.Root.OnImageChange)...)
	// resolv.conf is written before the guest boots; a running guest keeps what
	// it has until its next start (and an upgrade that changes the default,
	// such as the network's resolver, restarts nothing).
	d.later = append(d.later, diffJSON("resolvConf", old.ResolvConf, new.ResolvConf)...)
	d.later = append(d.later, diffFiles(old.Files, new.Files)...)
	// Credentials are read at each start: a changed one needs a restart.
	d.restart = append(diffJSON("", restartRelevant(old), restartRelevant(new)), diffCredentials(old.Credentials, new.Credentials)...)
	return d
}

// restartRelevant is a copy of m without the fields whose change needs no
// restart (or that the planner treats separately).
func restartRelevant(m *spec.Machine) spec.Machine {
	c := *m
	c.Source = spec.Source{}
	c.Profiles = nil // the profiles are merged in: only what they give counts
	c.State = ""
	c.Image = ""
	c.Resources = spec.Resources{}
	c.Network.Ports = nil
	c.Network.AntiSpoofing = nil
	c.Restart = spec.Restart{OnUnhealthy: m.Restart.OnUnhealthy} // the supervisor's, from the start
	c.StopTimeout = 0
	c.Root.OnImageChange = ""
	c.ResolvConf = ""
	c.Credentials, c.Files = nil, nil // diffCredentials, diffFiles
	return c
}

// LiveUpdated is the definition a running machine has once the declared one
// (m) was applied to it without a restart: what needs a restart stays as it was
// started (old), the rest is m's. The image is the one its root was made from.
func LiveUpdated(old, m *spec.Machine) spec.Machine {
	if old == nil {
		return *m
	}
	r := restartRelevant(old)
	r.Resources, r.Network.Ports, r.Network.AntiSpoofing = m.Resources, m.Network.Ports, m.Network.AntiSpoofing
	r.Restart, r.StopTimeout, r.Root.OnImageChange, r.ResolvConf = m.Restart, m.StopTimeout, m.Root.OnImageChange, m.ResolvConf
	r.Source, r.State, r.Image = m.Source, m.State, old.Image
	r.Restart.OnUnhealthy = old.Restart.OnUnhealthy
	r.Credentials, r.Files = old.Credentials, m.Files
	return r
}

// laterRestart is the part of the restart policy berthd reads at an exit:
// all of it but onUnhealthy, which the supervisor acts on (a change restarts
// the machine, as one of its health check does).
func laterRestart(r spec.Restart) spec.Restart {
	r.OnUnhealthy = false
	return r
}

// diffJSON lists the leaves that differ between a and b (values of one type),
// named by their JSON path under prefix and shown the way a person writes them:
// "resources.memoryMax: 512M → 1G".
func diffJSON(prefix string, a, b any) []string {
	var out []string
	diffValue(prefix, reflect.ValueOf(a), reflect.ValueOf(b), &out)
	sort.Strings(out)
	return out
}

func diffValue(path string, a, b reflect.Value, out *[]string) {
	if a.Kind() == reflect.Struct && a.Type() == b.Type() && !isTextual(a) {
		t := a.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			p := name
			if path != "" {
				p = path + "." + name
			}
			diffValue(p, a.Field(i), b.Field(i), out)
		}
		return
	}
	if reflect.DeepEqual(a.Interface(), b.Interface()) {
		return
	}
	*out = append(*out, fmt.Sprintf("%s: %s → %s", path, show(a), show(b)))
}

// isTextual reports whether a struct value has its own text form (netip.Prefix).
func isTextual(v reflect.Value) bool {
	_, ok := v.Interface().(fmt.Stringer)
	return ok
}

// show renders a value as the definitions write it.
func show(v reflect.Value) string {
	if v.Kind() == reflect.Bool {
		return fmt.Sprint(v.Bool()) // false is a value, not "(unset)"
	}
	if v.IsZero() {
		return "(unset)"
	}
	if s, ok := v.Interface().(fmt.Stringer); ok {
		return s.String()
	}
	switch v.Kind() {
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = show(v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case reflect.Pointer:
		return show(v.Elem())
	case reflect.Map, reflect.Struct:
		b, _ := json.Marshal(v.Interface())
		return string(b)
	}
	return fmt.Sprint(v.Interface())
}
