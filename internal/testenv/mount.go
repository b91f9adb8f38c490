package testenv

import (
	"testing"

	"golang.org/x/sys/unix"
)

// MountFS mounts a fresh filesystem of a memory-backed type (tmpfs, ramfs)
// on a new temporary directory and returns the directory; the mount is
// undone when the test ends, failed or not, before the directory is
// removed. Equivalent to `mount -t FSTYPE -o OPTIONS FSTYPE DIR`. It skips t
// unless root.
func MountFS(t testing.TB, fstype, options string) string {
	t.Helper()
	SkipUnlessRoot(t)
	dir := t.TempDir()
	if err := unix.Mount(fstype, dir, fstype, unix.MS_NOSUID|unix.MS_NODEV, options); err != nil {
		t.Fatalf("mount -t %s %s: %v", fstype, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			// Something (a test's open descriptor) still uses it: detach it
			// now, the kernel frees it once the last user is gone.
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("umount %s: %v", dir, err)
			}
		}
	})
	// Mounts under it (a test's own) must not propagate to the host's peers.
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("mount --make-private %s: %v", dir, err)
	}
	return dir
}
