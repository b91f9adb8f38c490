package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// DiskOf finds the whole disk that holds path, for I/O limit tests: its
// device node in /dev and its "MAJ:MIN" (a partition's disk, as the kernel
// throttles disks). It skips when path is on no block device (tmpfs,
// overlayfs) or the disk has no node in /dev.
func DiskOf(t testing.TB, path string) (node, disk string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	disk = fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	sys := "/sys/dev/block/" + disk
	if _, err := os.Stat(sys); err != nil {
		t.Skipf("skipping: %s is not on a block device (%s)", path, disk)
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		b, err := os.ReadFile(filepath.Join(sys, "..", "dev"))
		if err != nil {
			t.Fatal(err)
		}
		disk = strings.TrimSpace(string(b))
	}
	ents, _ := os.ReadDir("/dev")
	for _, e := range ents {
		p := filepath.Join("/dev", e.Name())
		if unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK &&
			fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)) == disk {
			return p, disk
		}
	}
	t.Skipf("skipping: disk %s (under %s) has no node in /dev", disk, path)
	return "", ""
}
