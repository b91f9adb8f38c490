package testhost

import (
	"slices"
	"testing"

	"github.com/berthd/berth/internal/testenv"
)

// Packages are what the test host's Debian 12 root holds on top of minbase: systemd
// as init with D-Bus and systemd-machined (systemd-container), and the tools berth
// drives on a host (iproute2, nftables) or the tests use inside (procps, tar
// compressors, busybox for tiny guests).
var Packages = []string{
	"systemd", "systemd-sysv", "dbus", "systemd-container", "libpam-systemd",
	"iproute2", "nftables", "procps", "busybox-static", "xz-utils", "zstd",
}

// Image returns the root of the cached Debian 12 test host image, built with
// debootstrap on first use (about a minute) under testenv.CacheDir()/testhost.
// Treat it as read-only: New copies it for each test host.
func Image(t testing.TB) string {
	t.Helper()
	return testenv.Debootstrap(t, "testhost", "bookworm", Packages)
}

// ResolvedImage is Image with systemd-resolved as well (a cache of its own,
// testhost-resolved): the host resolver berth gives its networks' DNS
// servers to. It is apart because resolved changes the host's resolv.conf,
// which the other tests' hosts keep as debootstrap left it.
func ResolvedImage(t testing.TB) string {
	t.Helper()
	return testenv.Debootstrap(t, "testhost-resolved", "bookworm", append(slices.Clone(Packages), "systemd-resolved"))
}
