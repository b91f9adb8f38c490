package osimage

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func write(t *testing.T, p, s string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), mode); err != nil {
		t.Fatal(err)
	}
}

func TestResetMachineIDOverlay(t *testing.T) {
	lower, upper := t.TempDir(), t.TempDir()
	write(t, filepath.Join(lower, "etc/machine-id"), "0123456789abcdef0123456789abcdef\n", 0o444)
	write(t, filepath.Join(lower, "var/lib/dbus/machine-id"), "0123456789abcdef0123456789abcdef\n", 0o644)
	if err := os.Chmod(filepath.Join(lower, "etc"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := ResetMachineID(upper, []string{lower}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(upper, "etc/machine-id"))
	if err != nil || st.Size() != 0 {
		t.Fatalf("upper machine-id: %v, %v", st, err)
	}
	if d, _ := os.Stat(filepath.Join(upper, "etc")); d.Mode().Perm() != 0o750 {
		t.Errorf("copied-up /etc has mode %v, want the image's 0750", d.Mode().Perm())
	}
	if l, err := os.Readlink(filepath.Join(upper, "var/lib/dbus/machine-id")); err != nil || l != "/etc/machine-id" {
		t.Errorf("dbus machine-id: %q, %v", l, err)
	}
	// The lower layer (the image) is never written.
	if b, _ := os.ReadFile(filepath.Join(lower, "etc/machine-id")); len(b) == 0 {
		t.Error("the image was changed")
	}
}

func TestResetMachineIDLeavesEmptyAlone(t *testing.T) {
	lower, upper := t.TempDir(), t.TempDir()
	write(t, filepath.Join(lower, "etc/machine-id"), "", 0o444)
	if err := ResetMachineID(upper, []string{lower}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(upper, "etc")); !os.IsNotExist(err) {
		t.Errorf("an image without an ID got an upper /etc: %v", err)
	}
}

func TestGeneralize(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "etc/machine-id"), "0123456789abcdef0123456789abcdef\n", 0o444)
	write(t, filepath.Join(root, "etc/hostname"), "buildhost\n", 0o644)
	write(t, filepath.Join(root, "etc/resolv.conf"), "nameserver 10.0.0.1\n", 0o644)
	write(t, filepath.Join(root, "var/lib/dbus/machine-id"), "0123456789abcdef0123456789abcdef\n", 0o644)
	if err := Generalize(root); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(root, "etc/machine-id")); st.Size() != 0 {
		t.Error("machine-id not emptied")
	}
	for _, gone := range []string{"etc/hostname", "etc/resolv.conf"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !os.IsNotExist(err) {
			t.Errorf("%s kept", gone)
		}
	}
}

// TestFindMerged: find sees the layers as overlayfs merges them.
func TestFindMerged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (whiteouts are device nodes, opaque marks trusted xattrs)")
	}
	low, mid, top := t.TempDir(), t.TempDir(), t.TempDir()
	write(t, filepath.Join(low, "etc/resolv.conf"), "low\n", 0o644)
	write(t, filepath.Join(low, "etc/hostname"), "low\n", 0o644)
	write(t, filepath.Join(low, "var/lib/x"), "low\n", 0o644)
	if err := os.MkdirAll(filepath.Join(mid, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(mid, "etc/resolv.conf"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(top, "var/lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(top, "var"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	layers := []string{top, mid, low}
	for rel, want := range map[string]string{"etc/resolv.conf": "", "etc/hostname": filepath.Join(low, "etc/hostname"), "var/lib/x": "", "var/lib": filepath.Join(top, "var/lib")} {
		if got := Find(layers, rel); got != want {
			t.Errorf("Find(%s) = %q, want %q", rel, got, want)
		}
	}
}
