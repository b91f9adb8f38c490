package rootfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestReadMerged: the merged view of a stack, as overlayfs shows it —
// uppermost wins, whiteouts and opaque directories hide what is below, and
// no lookup leaves its tree.
func TestReadMerged(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	dir := t.TempDir()
	tree := func(name string, files map[string]string) string {
		p := filepath.Join(dir, name)
		for rel, content := range files {
			f := filepath.Join(p, rel)
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				t.Fatal(err)
			}
			var err error
			switch content {
			case "<whiteout>":
				err = unix.Mknod(f, unix.S_IFCHR, 0)
			case "<opaque>":
				if err = os.MkdirAll(f, 0o755); err == nil {
					err = unix.Setxattr(f, "trusted.overlay.opaque", []byte("y"), 0)
				}
			case "<link to host>":
				err = os.Symlink("/etc/hostname", f)
			default:
				err = os.WriteFile(f, []byte(content), 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	base := tree("base", map[string]string{"etc/passwd": "base", "etc/group": "base", "usr/x": "base", "opt/y": "base"})
	mid := tree("mid", map[string]string{"etc/passwd": "mid", "etc/group": "<whiteout>", "usr": "<opaque>", "opt": "<whiteout>"})
	top := tree("top", map[string]string{"etc/shadow": "<link to host>", "usr/z": "top"})
	stack := []string{top, mid, base}
	for _, c := range []struct{ rel, want string }{
		{"/etc/passwd", "mid"}, {"etc/passwd", "mid"}, {"/usr/z", "top"},
		{"/etc/group", ""}, {"/usr/x", ""}, {"/opt/y", ""}, {"/nope", ""},
	} {
		b, err := ReadMerged(stack, c.rel)
		switch {
		case c.want == "" && !errors.Is(err, fs.ErrNotExist):
			t.Errorf("%s: %q, %v; want not found", c.rel, b, err)
		case c.want != "" && (err != nil || string(b) != c.want):
			t.Errorf("%s: %q, %v; want %q", c.rel, b, err, c.want)
		}
	}
	if b, err := ReadMerged(stack, "/etc/shadow"); err == nil {
		t.Errorf("a symbolic link to a host file was read: %q", b)
	}
	for rel, want := range map[string]bool{"/etc/shadow": true, "/usr": true, "/usr/z": true, "/usr/x": false, "/etc/group": false, "/opt": false} {
		if got := ExistsMerged(stack, rel); got != want {
			t.Errorf("ExistsMerged(%s) = %v, want %v", rel, got, want)
		}
	}
	if b, err := ReadMerged([]string{base}, "/etc/passwd"); err != nil || string(b) != "base" {
		t.Errorf("one tree: %q, %v", b, err)
	}
}
