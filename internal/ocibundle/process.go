package ocibundle

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthd/berth/container"
)

// defaultPath is where a bare program name is looked up when process.env
// has no PATH: berth's own PATH in a machine.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// process converts the bundle's process: it runs in application mode, under
// berth's reaper.
func (c *conv) process(p *specs.Process) {
	if p == nil {
		c.fail("process", "missing: berth runs the bundle's process")
		return
	}
	cfg := &c.b.Config
	cfg.Console = "passthrough"
	if p.Terminal {
		cfg.Console = "pty"
	}
	for i, kv := range p.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			c.fail(fmt.Sprintf("process.env[%d]", i), "%q: want KEY=VALUE", kv)
		}
	}
	cfg.Env = p.Env
	switch {
	case p.Cwd == "":
		c.fail("process.cwd", "missing: the directory the process starts in (\"/\" for the root)")
	case !path.IsAbs(p.Cwd):
		c.fail("process.cwd", "%q: must be an absolute path inside the root", p.Cwd)
	default:
		cfg.WorkingDir = path.Clean(p.Cwd)
	}
	c.args(p.Args, p.Env)
	c.user(p.User)
	c.capabilities(p.Capabilities, p.User.UID)
	c.rlimits(p.Rlimits)
	cfg.NoNewPrivileges = p.NoNewPrivileges
}

// args takes process.args; a bare program name ("sh", as runc spec writes
// it) is looked up in the PATH of process.env inside the root, as a runtime
// does, and becomes the path it found.
func (c *conv) args(args, env []string) {
	if len(args) == 0 || args[0] == "" {
		c.fail("process.args", "missing: the program to run and its arguments")
		return
	}
	args = slices.Clone(args)
	c.b.Config.Args = args
	prog := args[0]
	switch {
	case path.IsAbs(prog):
		return
	case strings.Contains(prog, "/"):
		args[0] = path.Join(c.b.Config.WorkingDir, prog)
		return
	case c.b.Config.Root.Dir == "":
		return // root.path is refused already
	}
	search := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			search = v
		}
	}
	for _, d := range filepath.SplitList(search) {
		if !path.IsAbs(d) {
			continue
		}
		p, err := securejoin.SecureJoin(c.b.Config.Root.Dir, path.Join(d, prog))
		if err != nil {
			continue
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			args[0] = path.Join(d, prog)
			return
		}
	}
	c.fail("process.args[0]", "%q: not found in the root's %s (PATH of process.env); give the program's absolute path", prog, search)
}

// user takes process.user: its IDs are the machine's (inside its user
// namespace, with one). Root with no groups is root with no supplementary
// groups, as a runtime sets them.
func (c *conv) user(u specs.User) {
	if u.Umask != nil && *u.Umask != 0o022 {
		c.fail("process.user.umask", "%#o: berth starts the process with umask 0022", *u.Umask)
	}
	c.b.Config.User = &container.User{UID: u.UID, GID: u.GID, Groups: slices.Clone(u.AdditionalGids)}
}

// rlimits takes process.rlimits as PID 1's limits.
func (c *conv) rlimits(rl []specs.POSIXRlimit) {
	seen := map[string]bool{}
	for i, r := range rl {
		lim := container.Rlimit{Type: r.Type, Soft: r.Soft, Hard: r.Hard}
		if err := lim.Check(); err != nil {
			c.fail(fmt.Sprintf("process.rlimits[%d]", i), "%v", err)
			continue
		}
		if t := strings.ToUpper(r.Type); seen[t] {
			c.fail(fmt.Sprintf("process.rlimits[%d].type", i), "%q given twice", r.Type)
		} else {
			seen[t] = true
		}
		c.b.Config.Rlimits = append(c.b.Config.Rlimits, lim)
	}
}

// capabilities turns process.capabilities into berth's: the bounding set
// into capAdd and capDrop (exact whichever network mode berth ends up
// with), the ambient set into ambientCaps. The other sets cannot be chosen
// in berth, only checked: after its exec, uid 0 holds its whole bounding
// set (effective and permitted), another user exactly its ambient set; the
// inheritable set is the ambient one. Absent, the machine keeps berth's
// default bounding set.
func (c *conv) capabilities(pc *specs.LinuxCapabilities, uid uint32) {
	if pc == nil {
		return
	}
	const at = "process.capabilities."
	bnd := c.capSet(at+"bounding", pc.Bounding)
	amb := c.capSet(at+"ambient", pc.Ambient)
	cfg := &c.b.Config
	host, own := container.DefaultCapabilities(false), container.DefaultCapabilities(true)
	cfg.CapAdd, cfg.CapDrop = minus(bnd, host), minus(own, bnd)
	if extra := minus(amb, bnd); len(extra) > 0 {
		c.fail(at+"ambient", "%s not in the bounding set", strings.Join(extra, ", "))
	}
	cfg.AmbientCaps = amb
	want, which, why := bnd, "bounding", "berth gives uid 0 its whole bounding set, as the kernel gives root on exec"
	if uid != 0 {
		want, which, why = amb, "ambient", "a user other than root holds exactly its ambient capabilities after its exec"
	}
	for _, s := range []struct {
		name string
		set  []string
	}{{"effective", pc.Effective}, {"permitted", pc.Permitted}} {
		got := c.capSet(at+s.name, s.set)
		if d := symmetric(got, want); len(d) > 0 {
			c.fail(at+s.name, "%s; make it the same as %s (it differs by %s)", why, which, strings.Join(d, ", "))
		}
	}
	if extra := minus(c.capSet(at+"inheritable", pc.Inheritable), amb); len(extra) > 0 {
		c.fail(at+"inheritable", "%s: berth's inheritable set is the ambient set", strings.Join(extra, ", "))
	}
}

// capSet is a list of capability names as sorted "CAP_…" names; unknown
// ones are refused.
func (c *conv) capSet(field string, names []string) []string {
	var out []string
	for i, n := range names {
		cn, err := container.CanonicalCapability(n)
		if err != nil {
			c.fail(fmt.Sprintf("%s[%d]", field, i), "%v", err)
			continue
		}
		if !slices.Contains(out, cn) {
			out = append(out, cn)
		}
	}
	sort.Strings(out)
	return out
}

// minus is a − b, sorted as a is.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// symmetric is what is in a or b but not both, sorted.
func symmetric(a, b []string) []string {
	out := append(minus(a, b), minus(b, a)...)
	sort.Strings(out)
	return out
}
