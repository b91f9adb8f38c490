// Package osimage prepares an installed OS tree to serve as an image that many
// machines are made from.
package osimage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Generalize makes a freshly installed tree an image rather than one
// machine: debootstrap leaves the building host's /etc/hostname and
// /etc/resolv.conf in it, and the systemd package's post-install writes a
// machine ID, which every machine made from the image would then share. As
// systemd's image conventions ask, /etc/machine-id is left empty (systemd fills
// it at first boot from the container's UUID, so each machine gets its own,
// stable ID), D-Bus's copy becomes a link to it, and the hostname and resolver
// come from the machine's definition when it starts.
func Generalize(root string) error {
	mid := filepath.Join(root, "etc/machine-id")
	if st, err := os.Lstat(mid); err == nil && st.Mode().IsRegular() {
		if err := os.Truncate(mid, 0); err != nil {
			return err
		}
	}
	dbus := filepath.Join(root, "var/lib/dbus/machine-id")
	if st, err := os.Lstat(dbus); err == nil && st.Mode().IsRegular() {
		if err := os.Remove(dbus); err != nil {
			return err
		}
		if err := os.Symlink("/etc/machine-id", dbus); err != nil {
			return err
		}
	}
	for _, f := range []string{"etc/hostname", "etc/resolv.conf"} {
		if err := os.Remove(filepath.Join(root, f)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// ResetMachineID gives a new machine root its own identity: when the tree the
// guest will see (upper over lowers, the first that has a path wins; for a plain
// tree, upper alone) carries a machine ID — an image made from a machine that
// had booted, or the root a clone was copied from — an empty /etc/machine-id is
// written into upper, so the guest's systemd takes the machine's UUID at its
// first boot, and D-Bus's copy becomes a link to it. Without this every machine
// made from such an image, and every clone, would share one ID.
func ResetMachineID(upper string, lowers []string) error {
	layers := append([]string{upper}, lowers...)
	if p := find(layers, "etc/machine-id"); p != "" {
		if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() && st.Size() > 0 {
			if err := CopyUpDir(lowers, upper, "etc"); err != nil {
				return err
			}
			dst := filepath.Join(upper, "etc/machine-id")
			if err := os.Remove(dst); err != nil && !os.IsNotExist(err) {
				return err
			}
			if err := os.WriteFile(dst, nil, 0o444); err != nil {
				return err
			}
		}
	}
	if p := find(layers, "var/lib/dbus/machine-id"); p != "" {
		if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() {
			if err := CopyUpDir(lowers, upper, "var/lib/dbus"); err != nil {
				return err
			}
			dst := filepath.Join(upper, "var/lib/dbus/machine-id")
			if err := os.Remove(dst); err != nil && !os.IsNotExist(err) {
				return err
			}
			return os.Symlink("/etc/machine-id", dst)
		}
	}
	return nil
}

// find returns the path of rel in the first layer that has it ("" when none
// has it), as overlayfs merges layers (uppermost first): a whiteout (a 0/0
// character device) at rel or on its way hides it, and an opaque directory
// on its way hides the layers below.
func find(layers []string, rel string) string {
	parts := strings.Split(filepath.Clean(rel), string(filepath.Separator))
	for _, l := range layers {
		hidden := false
		for i := range parts {
			p := filepath.Join(append([]string{l}, parts[:i+1]...)...)
			st, err := os.Lstat(p)
			if err != nil {
				break
			}
			if st.Mode()&fs.ModeCharDevice != 0 {
				if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Rdev == 0 {
					return ""
				}
			}
			if i == len(parts)-1 {
				return p
			}
			if st.IsDir() && isOpaque(p) {
				hidden = true
			}
		}
		if hidden {
			return ""
		}
	}
	return ""
}

// Find is find for other packages: where the merged view of layers
// (uppermost first) has rel, or "".
func Find(layers []string, rel string) string { return find(layers, rel) }

func isOpaque(dir string) bool {
	buf := make([]byte, 2)
	n, err := unix.Lgetxattr(dir, "trusted.overlay.opaque", buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

// CopyUpDir makes dir (and its parents) in the upper layer with the owner and
// mode they have in the lower layers, as overlayfs's own copy-up would, so the
// merged directories look the same. Directories upper has already are kept.
func CopyUpDir(lowers []string, upper, dir string) error {
	parts := strings.Split(filepath.Clean(dir), string(filepath.Separator))
	for i := range parts {
		rel := filepath.Join(parts[:i+1]...)
		dst := filepath.Join(upper, rel)
		if st, err := os.Lstat(dst); err == nil {
			if !st.IsDir() {
				return fmt.Errorf("%s is not a directory", dst)
			}
			continue
		}
		mode, uid, gid := os.FileMode(0o755), 0, 0
		if p := find(lowers, rel); p != "" {
			st, err := os.Lstat(p)
			if err != nil {
				return err
			}
			if !st.IsDir() {
				return fmt.Errorf("%s is not a directory in the image", rel)
			}
			mode = st.Mode().Perm()
			if sys, ok := st.Sys().(*syscall.Stat_t); ok {
				uid, gid = int(sys.Uid), int(sys.Gid)
			}
		}
		if err := os.Mkdir(dst, mode); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := os.Lchown(dst, uid, gid); err != nil {
			return err
		}
		if err := os.Chmod(dst, mode); err != nil {
			return err
		}
	}
	return nil
}
