package host

import (
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/berthd/berth/internal/osimage"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
)

// resolvConf says what the machine's /etc/resolv.conf should hold, or nil
// when berth leaves it alone. resolving says whether the network's resolver
// runs: when it could not start, the machine gets the servers it would get
// without it, rather than a server that does not answer.
func resolvConf(d *spec.Set, m *spec.Machine, resolving bool) *netconf.ResolvConf {
	switch m.ResolvConf {
	case spec.ResolvConfNetwork:
		// The network's resolver on its gateway, or the network's servers
		// (the host's when it names none). A guest's own file is never
		// replaced: berth writes a missing one or its own.
		rc := &netconf.ResolvConf{Machine: m.Name}
		n := d.Network(m.Network.Name)
		switch {
		case n == nil:
		case n.ResolverOn() && n.Gateway.IsValid() && resolving:
			rc.Servers, rc.Search, rc.Source = []netip.Addr{n.Gateway}, []string{n.Resolver.Domain}, "the network's resolver"
			if n.Gateway6.IsValid() && n.Subnet6.IsValid() {
				rc.Servers = append(rc.Servers, n.Gateway6)
			}
		default:
			rc.Servers = n.DNS
		}
		return rc
	case spec.ResolvConfHost:
		return &netconf.ResolvConf{Machine: m.Name}
	}
	return nil
}

// writeResolvConf applies netconf's rule (write a missing or berth-written
// file, leave the guest's own alone unless asked) to a machine root. An overlay
// root is not mounted on the host, so the file the guest will see is found
// layer by layer, and a new one goes into the upper layer.
func writeResolvConf(root *rootfs.Root, rc netconf.ResolvConf) error {
	if root.Overlay == nil {
		_, err := netconf.WriteResolvConf(root.Dir, rc)
		return err
	}
	upper := root.Overlay.Upper
	if _, err := os.Lstat(filepath.Join(upper, "etc/resolv.conf")); err == nil {
		// The upper layer decides (a file, a symlink, or a whiteout, which the
		// rule treats as the guest's own choice).
		if isWhiteout(filepath.Join(upper, "etc/resolv.conf")) && !rc.Replace {
			return nil
		}
		_, err := netconf.WriteResolvConf(upper, rc)
		return err
	}
	if p := osimage.Find(root.Overlay.Lower, "etc/resolv.conf"); p != "" {
		// The image's file: berth writes over it (in the upper layer) only when
		// it is berth's own or the definition asks; netconf's rule, applied to
		// the lower file, says which.
		mine, err := netconf.ResolvConfByBerth(filepath.Dir(p))
		if err != nil {
			return err
		}
		if !mine && !rc.Replace {
			return nil
		}
	}
	if err := osimage.CopyUpDir(root.Overlay.Lower, upper, "etc"); err != nil {
		return err
	}
	_, err := netconf.WriteResolvConf(upper, rc)
	return err
}

// isWhiteout reports whether p is an overlayfs whiteout (a 0/0 device node).
func isWhiteout(p string) bool {
	st, err := os.Lstat(p)
	if err != nil || st.Mode()&fs.ModeCharDevice == 0 {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && sys.Rdev == 0
}
