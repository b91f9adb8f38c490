// Package osimage prepares an installed OS tree to serve as an image that many
// machines are made from.
package osimage

import (
	"os"
	"path/filepath"
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
