package ocibundle

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthd/berth/container"
)

// provided are the mounts every machine gets from berth, by destination,
// with the types a bundle may give there: berth's own mount stands for the
// bundle's, with berth's options (/sys read-only, /sys/fs/cgroup the
// machine's own cgroup2, writable for its subtree).
var provided = map[string][]string{
	"/proc":          {"proc"},
	"/dev":           {"tmpfs"},
	"/dev/pts":       {"devpts"},
	"/dev/shm":       {"tmpfs"},
	"/dev/mqueue":    {"mqueue"},
	"/sys":           {"sysfs"},
	"/sys/fs/cgroup": {"cgroup", "cgroup2"},
}

// mounts converts the bundle's mounts: berth's own at their usual places,
// binds and tmpfs mounts; anything else is refused.
func (c *conv) mounts(ms []specs.Mount) {
	for i, m := range ms {
		at := fmt.Sprintf("mounts[%d]", i)
		if !path.IsAbs(m.Destination) {
			c.fail(at+".destination", "%q: must be an absolute path inside the root", m.Destination)
			continue
		}
		dst := path.Clean(m.Destination)
		bind := m.Type == "bind" || ((m.Type == "" || m.Type == "none") && (slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")))
		if types, ok := provided[dst]; ok {
			// runc spec --rootless binds the host's /sys, which cannot be
			// mounted without privileges: berth's own /sys stands for it.
			if slices.Contains(types, m.Type) || (dst == "/sys" && bind && path.Clean(m.Source) == "/sys") {
				continue
			}
			c.fail(at, "%s on %s: every machine has berth's own mount there; give type %s, or leave the mount out", mountKind(m, bind), dst, strings.Join(types, " or "))
			continue
		}
		switch {
		case bind:
			c.bind(at, m, dst)
		case m.Type == "tmpfs":
			c.tmpfs(at, m, dst)
		case m.Type == "" || m.Type == "none":
			c.fail(at+".type", "missing: berth mounts type bind (or options bind, rbind) and tmpfs")
		default:
			c.fail(at+".type", "%q: berth mounts bind and tmpfs only, and gives every machine its own proc, sysfs, devpts, mqueue and cgroup2 at their usual places", m.Type)
		}
	}
}

func mountKind(m specs.Mount, bind bool) string {
	if bind {
		return "a bind"
	}
	return strconv.Quote(m.Type)
}

// bindOptions are the options of a bind that berth carries out: every berth
// bind is recursive and private to the machine.
var bindOptions = map[string]bool{"ro": true, "rw": true, "bind": true, "rbind": true, "private": true, "rprivate": true}

// bind converts a bind mount; a relative source is the bundle's.
func (c *conv) bind(at string, m specs.Mount, dst string) {
	src := m.Source
	if src == "" {
		c.fail(at+".source", "missing: the host path to bind")
		return
	}
	if !filepath.IsAbs(src) {
		src = filepath.Join(c.dir, src)
	}
	if _, err := os.Stat(src); err != nil {
		c.fail(at+".source", "%q: %v", m.Source, err)
		return
	}
	mnt := container.Mount{Type: "bind", Source: filepath.Clean(src), Target: dst}
	for j, o := range m.Options {
		switch {
		case o == "ro":
			mnt.ReadOnly = true
		case o == "rw":
			mnt.ReadOnly = false
		case !bindOptions[o]:
			c.fail(fmt.Sprintf("%s.options[%d]", at, j), "%q: not supported for a bind by berth (it takes ro, rw, bind, rbind, private, rprivate: its binds are recursive and private)", o)
		}
	}
	c.b.Config.Mounts = append(c.b.Config.Mounts, mnt)
}

var tmpfsSize = regexp.MustCompile(`^(size|nr_inodes)=[0-9]+[kKmMgG%]?$`)

// tmpfs converts a tmpfs mount: size, nr_inodes, mode and ro; berth mounts
// every tmpfs nosuid and nodev.
func (c *conv) tmpfs(at string, m specs.Mount, dst string) {
	mnt := container.Mount{Type: "tmpfs", Target: dst}
	var extra []string
	for j, o := range m.Options {
		switch mode, isMode := strings.CutPrefix(o, "mode="); {
		case o == "ro":
			mnt.ReadOnly = true
		case o == "rw", o == "nosuid", o == "nodev":
		case isMode:
			n, err := strconv.ParseUint(mode, 8, 32)
			if err != nil || n > 0o7777 {
				c.fail(fmt.Sprintf("%s.options[%d]", at, j), "%q: want an octal mode", o)
			}
			mnt.Mode = uint32(n)
		case tmpfsSize.MatchString(o):
			extra = append(extra, o)
		default:
			c.fail(fmt.Sprintf("%s.options[%d]", at, j), "%q: not supported for a tmpfs by berth (it takes size=, nr_inodes=, mode=, ro, rw, nosuid, nodev: every tmpfs of berth's is nosuid and nodev)", o)
		}
	}
	mnt.Options = strings.Join(extra, ",")
	c.b.Config.Mounts = append(c.b.Config.Mounts, mnt)
}
