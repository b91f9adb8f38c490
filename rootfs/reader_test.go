package rootfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestReadRoot: a stopped machine's root read as the machine sees it (its
// upper directory over the image, whiteouts hiding), under its lock, with
// nothing mounted where anyone sees it, nothing written to the root, and no
// guest-made link or special file leading berth anywhere.
func TestReadRoot(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	tree := t.TempDir()
	for rel, body := range map[string]string{"var/log/j/a": "image a", "var/log/j/gone": "image", "etc/os-release": "ID=tiny\n"} {
		p := filepath.Join(tree, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, []byte(body))
	}
	if _, err := s.Import(ctx, "tiny", Dir{Path: tree}, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, st := range []Strategy{StrategyOverlay, StrategyCopy} {
		t.Run(string(st), func(t *testing.T) {
			m := testenv.UniqueName("rd")
			r, err := s.CreateRoot(ctx, m, "tiny", st)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = s.RemoveRoot(m, true) })
			top := r.Dir
			if r.Overlay != nil {
				top = r.Overlay.Upper
			}
			// What the guest wrote: a file of its own, a whiteout (overlay) or
			// a removal, a link to a host file, a FIFO, a link up and out.
			dir := filepath.Join(top, "var/log/j")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "b"), []byte("guest b"))
			if r.Overlay != nil {
				if err := unix.Mknod(filepath.Join(dir, "gone"), unix.S_IFCHR, 0); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Remove(filepath.Join(dir, "gone")); err != nil {
				t.Fatal(err)
			}
			for name, target := range map[string]string{"shadow": "/etc/shadow", "up": "../../../../../../etc/shadow"} {
				if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/etc", filepath.Join(top, "hostetc")); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile("/proc/self/mountinfo")

			rd, err := s.ReadRoot(m)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.LockRoot(m); !errors.Is(err, ErrBusy) {
				t.Errorf("LockRoot while the root is read = %v, want ErrBusy", err)
			}
			if after, _ := os.ReadFile("/proc/self/mountinfo"); string(after) != string(before) {
				t.Errorf("reading the root mounted something visible:\n%s", after)
			}
			names, err := rd.ReadDir("/var/log/j", 100)
			slices.Sort(names)
			if want := []string{"a", "b", "fifo", "shadow", "up"}; err != nil || !slices.Equal(names, want) {
				t.Errorf("ReadDir = %q, %v; want %q", names, err, want)
			}
			for rel, want := range map[string]string{"var/log/j/a": "image a", "/var/log/j/b": "guest b", "etc/os-release": "ID=tiny\n"} {
				f, err := rd.Open(rel)
				if err != nil {
					t.Errorf("Open(%s): %v", rel, err)
					continue
				}
				b, _ := io.ReadAll(f)
				f.Close()
				if string(b) != want {
					t.Errorf("Open(%s) reads %q, want %q", rel, b, want)
				}
			}
			// Refused: links at the path, special files, whited out; and a
			// link on the way resolves inside the root (its /etc has no
			// shadow), never to the host's.
			for _, rel := range []string{"var/log/j/shadow", "var/log/j/up", "var/log/j/fifo", "var/log/j/gone", "hostetc/shadow", "../../etc/shadow", "var/log/j"} {
				if f, err := rd.Open(rel); err == nil {
					f.Close()
					t.Errorf("Open(%s) succeeded", rel)
				}
			}
			if _, err := rd.ReadDir("nope", 10); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("ReadDir(nope) = %v, want ErrNotExist", err)
			}
			if err := rd.Close(); err != nil {
				t.Fatal(err)
			}
			lock, err := s.LockRoot(m)
			if err != nil {
				t.Fatalf("LockRoot after Close: %v", err)
			}
			lock.Unlock()
			if r.Overlay != nil {
				if ents, _ := os.ReadDir(r.Overlay.Work); len(ents) > 1 {
					t.Errorf("the work directory was used: %v", ents)
				}
			}
		})
	}
}
