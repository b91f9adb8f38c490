package host

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
)

// systemdPaths are where an image that boots keeps systemd (container's
// pickInit looks there first, then at /sbin/init).
var systemdPaths = []string{"/usr/lib/systemd/systemd", "/lib/systemd/systemd"}

// imageDefaults fills what a machine's definition leaves to its image's OCI
// config, as an OCI runtime would: a machine without a command boots an
// image that has systemd (an OS image) or the definition's init, and
// otherwise runs the image's Entrypoint and Cmd in application mode (an
// image with neither boots its /sbin/init, if it has one: busybox's or
// alpine's /sbin/init alone does not make an application image an OS
// image to boot); the image's Env
// comes first and the definition's environment wins; in application mode
// the image's WorkingDir (unless the definition has workingDir), User
// (resolved in the image's own /etc/passwd and /etc/group) and StopSignal.
// stack is the machine root's trees, uppermost first (rootfs.Root.Stack).
func imageDefaults(c *container.Config, m *spec.Machine, img *rootfs.Image, stack []string) error {
	if img == nil || img.Config == nil {
		return nil
	}
	ic := img.Config
	args := append(append([]string(nil), ic.Entrypoint...), ic.Cmd...)
	if len(m.Command) == 0 && !boots(stack, m.Init) {
		switch {
		case len(args) > 0:
			c.Boot, c.Args = false, args
		case !rootfs.ExistsMerged(stack, "/sbin/init"):
			return fmt.Errorf("image %s has neither an init (%s, /sbin/init) nor a command (Entrypoint, Cmd): give the machine a command",
				imageName(img), strings.Join(systemdPaths, ", "))
		}
	}
	c.Env = mergeEnv(ic.Env, c.Env)
	if c.Boot {
		return nil
	}
	if m.WorkDir == "" && ic.WorkingDir != "" {
		c.WorkingDir = ic.WorkingDir
	}
	if ic.User != "" {
		u, err := resolveUser(stack, ic.User)
		if err != nil {
			return fmt.Errorf("image %s: User %q: %w", imageName(img), ic.User, err)
		}
		c.User = u
	}
	if ic.StopSignal != "" {
		sig, err := parseSignal(ic.StopSignal)
		if err != nil {
			return fmt.Errorf("image %s: StopSignal: %w", imageName(img), err)
		}
		c.PoweroffSignal = int(sig)
	}
	return nil
}

func imageName(img *rootfs.Image) string {
	if img.Ref != "" {
		return img.Ref
	}
	return img.Name
}

// boots says whether a machine without a command boots this root: the
// definition names an init, or the root has systemd.
func boots(stack []string, init string) bool {
	if init != "" {
		return true
	}
	for _, p := range systemdPaths {
		if rootfs.ExistsMerged(stack, p) {
			return true
		}
	}
	return false
}

// mergeEnv is base with over's variables replacing those of the same name.
func mergeEnv(base, over []string) []string {
	out := make([]string, 0, len(base)+len(over))
	set := map[string]bool{}
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	for _, kv := range base {
		if k, _, _ := strings.Cut(kv, "="); !set[k] {
			out = append(out, kv)
		}
	}
	return append(out, over...)
}

// resolveUser reads an OCI config's User — user, uid, user:group, uid:gid,
// user:gid or uid:group — as runc does: names from the image's /etc/passwd
// and /etc/group, a uid alone takes its passwd entry's group (0 without
// one), and the user's supplementary groups come from /etc/group.
func resolveUser(stack []string, s string) (*container.User, error) {
	userPart, groupPart, hasGroup := strings.Cut(s, ":")
	passwd, err := colonFile(stack, "/etc/passwd")
	if err != nil {
		return nil, err
	}
	u := &container.User{}
	name := ""
	if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		u.UID = uint32(n)
		for _, f := range passwd {
			if len(f) > 3 && f[2] == userPart {
				name, u.GID = f[0], atou(f[3])
				break
			}
		}
	} else {
		found := false
		for _, f := range passwd {
			if len(f) > 3 && f[0] == userPart {
				name, u.UID, u.GID, found = f[0], atou(f[2]), atou(f[3]), true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("no user %q in the image's /etc/passwd", userPart)
		}
	}
	group, err := colonFile(stack, "/etc/group")
	if err != nil {
		return nil, err
	}
	if hasGroup {
		if u.GID, err = lookupGroup(group, groupPart); err != nil {
			return nil, err
		}
	}
	for _, f := range group {
		if len(f) > 3 && name != "" && memberOf(f[3], name) && atou(f[2]) != u.GID {
			u.Groups = append(u.Groups, atou(f[2]))
		}
	}
	return u, nil
}

func lookupGroup(group [][]string, g string) (uint32, error) {
	if n, err := strconv.ParseUint(g, 10, 32); err == nil {
		return uint32(n), nil
	}
	for _, f := range group {
		if len(f) > 2 && f[0] == g {
			return atou(f[2]), nil
		}
	}
	return 0, fmt.Errorf("no group %q in the image's /etc/group", g)
}

// colonFile reads a passwd-style file of the merged view into its fields;
// a missing file is empty.
func colonFile(stack []string, rel string) ([][]string, error) {
	b, err := rootfs.ReadMerged(stack, rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out [][]string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, strings.Split(l, ":"))
		}
	}
	return out, nil
}

func atou(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}

func memberOf(list, s string) bool {
	for _, x := range strings.Split(list, ",") {
		if strings.TrimSpace(x) == s {
			return true
		}
	}
	return false
}
