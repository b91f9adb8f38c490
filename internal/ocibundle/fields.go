package ocibundle

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// fieldKind says what berth does with a field of config.json.
type fieldKind int

const (
	// read: the conversion takes the field in (and may still refuse a value
	// of it that berth cannot carry out, with its own message).
	read fieldKind = iota + 1
	// descend: an object, or an array of objects ("path[]" then names every
	// element), whose own fields are looked up in fields.
	descend
)

// fields are the paths of config.json berth reads. A field that is present,
// not empty, and not here is refused by its path: nothing is dropped
// silently. "[]" stands for any element of an array.
var fields = map[string]fieldKind{
	"ociVersion": read, "hostname": read, "annotations": read,
	"root": descend, "root.path": read, "root.readonly": read,

	"process": descend, "process.terminal": read, "process.args": read, "process.env": read,
	"process.cwd": read, "process.noNewPrivileges": read,
	"process.user": descend, "process.user.uid": read, "process.user.gid": read,
	"process.user.additionalGids": read, "process.user.umask": read,
	"process.capabilities": descend, "process.capabilities.bounding": read, "process.capabilities.effective": read,
	"process.capabilities.inheritable": read, "process.capabilities.permitted": read, "process.capabilities.ambient": read,
	"process.rlimits": descend, "process.rlimits[]": descend,
	"process.rlimits[].type": read, "process.rlimits[].soft": read, "process.rlimits[].hard": read,

	"mounts": descend, "mounts[]": descend, "mounts[].destination": read, "mounts[].type": read,
	"mounts[].source": read, "mounts[].options": read,

	"linux":            descend,
	"linux.namespaces": descend, "linux.namespaces[]": descend, "linux.namespaces[].type": read,
	"linux.uidMappings": descend, "linux.uidMappings[]": descend, "linux.uidMappings[].containerID": read,
	"linux.uidMappings[].hostID": read, "linux.uidMappings[].size": read,
	"linux.gidMappings": descend, "linux.gidMappings[]": descend, "linux.gidMappings[].containerID": read,
	"linux.gidMappings[].hostID": read, "linux.gidMappings[].size": read,
	"linux.maskedPaths": read, "linux.readonlyPaths": read,
	"linux.resources":         descend,
	"linux.resources.devices": descend, "linux.resources.devices[]": descend, "linux.resources.devices[].allow": read,
	"linux.resources.devices[].type": read, "linux.resources.devices[].major": read,
	"linux.resources.devices[].minor": read, "linux.resources.devices[].access": read,
	"linux.resources.memory": descend, "linux.resources.memory.limit": read,
	"linux.resources.cpu": descend, "linux.resources.cpu.quota": read, "linux.resources.cpu.period": read,
	"linux.resources.cpu.shares": read, "linux.resources.cpu.cpus": read,
	"linux.resources.pids": descend, "linux.resources.pids.limit": read,
	"linux.resources.blockIO": descend, "linux.resources.blockIO.weight": read,
}

// why says, for fields berth refuses, why, or what it does instead.
var why = map[string]string{
	"hooks":                   "berth runs no OCI hooks",
	"linux.seccomp":           "berth applies its own system call filter (change it with --system-call-filter)",
	"linux.cgroupsPath":       "berth puts each machine in a cgroup of its own",
	"linux.devices":           "a machine gets berth's own device nodes only (null, zero, full, random, urandom, tty, net/tun, its ptys and console)",
	"linux.namespaces[].path": "berth makes each namespace anew and joins none",
	"linux.rootfsPropagation": "the machine's mounts are private to it",
	"linux.sysctl":            "berth sets no sysctls",
	"linux.mountLabel":        "berth applies no SELinux labels",
	"process.selinuxLabel":    "berth applies no SELinux labels",
	"process.apparmorProfile": "berth applies no AppArmor profile",
	"process.consoleSize":     "the console takes the size of berth's terminal",
	"process.user.username":   "a Windows field; give uid and gid",
	"mounts[].uidMappings":    "berth idmaps no bind of a bundle",
	"mounts[].gidMappings":    "berth idmaps no bind of a bundle",
	"domainname":              "berth sets no NIS domain name",
}

// unsupported refuses every non-empty field of config.json that is not in
// fields, by its path, in a stable order.
func (c *conv) unsupported(raw map[string]any) {
	var bad []string
	walk("", "", raw, func(path, pattern string) { bad = append(bad, path+"\x00"+pattern) })
	sort.Strings(bad)
	for _, b := range bad {
		path, pattern, _ := strings.Cut(b, "\x00")
		msg := "not supported by berth"
		if w := why[pattern]; w != "" {
			msg += ": " + w
		}
		c.fail(path, "%s", msg)
	}
}

// walk calls refuse for each field below v (an object at path, whose
// pattern in fields is pattern) that berth does not read.
func walk(path, pattern string, v any, refuse func(path, pattern string)) {
	obj, ok := v.(map[string]any)
	if !ok {
		return
	}
	for k, val := range obj {
		p, pat := k, k
		if path != "" {
			p, pat = path+"."+k, pattern+"."+k
		}
		switch fields[pat] {
		case read:
		case descend:
			if arr, ok := val.([]any); ok {
				for i, e := range arr {
					walk(fmt.Sprintf("%s[%d]", p, i), pat+"[]", e, refuse)
				}
			} else {
				walk(p, pat, val, refuse)
			}
		default:
			if !empty(val) {
				refuse(p, pat)
			}
		}
	}
}

// empty says whether a JSON value says nothing: null, false, "", or an
// object or array of nothing but empty values (a zero number is a value).
func empty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return !x
	case string:
		return x == ""
	case json.Number:
		return false
	case []any:
		for _, e := range x {
			if !empty(e) {
				return false
			}
		}
		return true
	case map[string]any:
		for _, e := range x {
			if !empty(e) {
				return false
			}
		}
		return true
	}
	return false
}
