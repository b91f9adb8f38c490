package userns

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/internal/fsutil"
	"golang.org/x/sys/unix"
)

// KernelSupportsIdmappedMounts returns nil when the running kernel has
// idmapped mounts (Linux 5.12), else an error matching ErrUnsupported that
// names the kernel. Whether a filesystem can be idmapped is Probe's question.
func KernelSupportsIdmappedMounts() error { return idmappedMounts.check(KernelRelease()) }

// KernelSupportsIdmappedOverlay returns nil when the running kernel can
// mount overlayfs over idmapped layers (Linux 5.19), else an error matching
// ErrUnsupported that names the kernel.
func KernelSupportsIdmappedOverlay() error { return idmappedOverlay.check(KernelRelease()) }

// KernelRelease is the running kernel's release, as `uname -r` prints it.
var KernelRelease = sync.OnceValue(func() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
})

// probeBase is the host side of the probe's mapping. Nothing is ever
// attached with it, so no file is ever seen through it; it is the first UID
// past berth's pick range, which no machine gets.
const probeBase = PickMax

// Probe returns nil when the filesystem at path can be idmapped on this
// kernel, else an error matching ErrUnsupported that names the path, its
// filesystem and the kernel. It clones the mount at path (with its
// submounts, as a root's layer would be) and idmaps the clone, which is
// never attached anywhere and goes when its descriptor closes. Equivalent to
// `mount --bind -o X-mount.idmap=… PATH` without the mount.
func Probe(path string) error {
	if err := KernelSupportsIdmappedMounts(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	ns, err := RangeNS(probeBase)
	if err != nil {
		return err
	}
	defer ns.Close()
	return ns.Probe(path)
}

// Probe is Probe with this namespace as the mapping.
func (ns *NS) Probe(path string) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return cannotIdmap(path, "open_tree(OPEN_TREE_CLONE)", err)
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns.fd)}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return cannotIdmap(path, "mount_setattr(MOUNT_ATTR_IDMAP)", err)
	}
	return nil
}

// cannotIdmap explains a failed probe: "/var/lib/berth/machines is on ramfs,
// which cannot be idmapped on Linux 6.18.44 (mount_setattr(MOUNT_ATTR_IDMAP):
// invalid argument)".
func cannotIdmap(path, op string, err error) error {
	fsType, serr := fsutil.TypeOf(path)
	if serr != nil {
		return fmt.Errorf("%s: %w", op, serr)
	}
	why := fmt.Sprintf("which cannot be idmapped on Linux %s", KernelRelease())
	switch {
	case errors.Is(err, unix.EPERM):
		why = "and idmapping it needs CAP_SYS_ADMIN (run as root)"
	case errors.Is(err, unix.ENOSYS):
		why = fmt.Sprintf("and Linux %s has no mount_setattr(2) (idmapped mounts need Linux 5.12 or newer)", KernelRelease())
	}
	return errdefs.Errorf(errdefs.ErrUnsupported, "%s is on %s, %s (%s: %v)", path, fsType, why, op, err)
}

// KernelSupportsUserNamespaces returns nil when this kernel lets berth make
// user namespaces, else an error matching ErrUnsupported that says why: a
// kernel built without them, or a sysctl that forbids them.
func KernelSupportsUserNamespaces() error {
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		return errdefs.Errorf(errdefs.ErrUnsupported, "this kernel (Linux %s) has no user namespaces (CONFIG_USER_NS)", KernelRelease())
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return errdefs.Errorf(errdefs.ErrUnsupported, "user namespaces are turned off on this host (/proc/sys/user/max_user_namespaces is 0)")
	}
	return nil
}
