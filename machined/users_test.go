package machined_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/machined/api"
	"golang.org/x/sys/unix"
)

// TestShiftedRoot: where the machines' filesystem cannot be idmapped (ramfs
// here), a copy root is shifted into the machine's range once, boots with
// its files owned by root inside, says so in berth status, and is shifted
// back when private users are turned off; security.idmap: required refuses.
func TestShiftedRoot(t *testing.T) {
	e := newEnv(t, "")
	machines := filepath.Join(e.paths.StateDir, "machines")
	if err := os.MkdirAll(machines, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("ramfs", machines, "ramfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		t.Fatalf("mount ramfs: %v", err)
	}
	if err := os.Mkdir(filepath.Join(machines, ".tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.teardown()
		if err := unix.Unmount(machines, 0); err != nil {
			_ = unix.Unmount(machines, unix.MNT_DETACH)
		}
	})
	name := testenv.UniqueName("shift")
	e.write("images.yaml", testImages(t))
	e.write("network.yaml", testNetwork)
	def := func(extra string) {
		e.write("m.yaml", bbMachine(name, "root: {strategy: copy}\n"+extra))
	}
	owner := func() uint32 {
		e.t.Helper()
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(machines, name, "rootfs", "bin"), &st); err != nil {
			e.t.Fatal(err)
		}
		return st.Uid
	}

	e.run("required refuses", func(t *testing.T) {
		def("security: {idmap: required}\n")
		res, err := e.api.Apply(t.Context(), api.ApplyRequest{Path: filepath.Join(e.dir, "defs")})
		if err != nil || len(res.Results) == 0 {
			t.Fatalf("apply: %+v, %v", res, err)
		}
		testenv.Eventually(t, 20*time.Second, func() error {
			s := e.status(name)
			if s.State == api.StateRunning || !strings.Contains(s.LastError, "cannot be idmapped") || !strings.Contains(s.LastError, "security.idmap: optional") {
				return fmt.Errorf("status %s, last error %q: want a start refused naming the idmap", s.State, s.LastError)
			}
			return nil
		})
	})

	e.run("optional shifts once", func(t *testing.T) {
		def("")
		e.apply()
		s := e.waitState(name, api.StateRunning, 30*time.Second)
		if s.Users == nil || s.Users.Root != "shifted" || !strings.Contains(s.Users.Why, "ramfs") {
			t.Fatalf("users %+v, want a root shifted because of ramfs", s.Users)
		}
		if got := owner(); got != s.Users.Base {
			t.Fatalf("/bin on disk owned by %d, want the range's root %d", got, s.Users.Base)
		}
		if out, _ := e.exec(name, "stat", "-c", "%u:%g", "/bin"); strings.TrimSpace(out) != "0:0" {
			t.Fatalf("/bin inside owned by %q, want 0:0", out)
		}
	})

	e.run("private users off shifts it back", func(t *testing.T) {
		def("privateUsers: false\n")
		e.apply()
		testenv.Eventually(t, 30*time.Second, func() error {
			if s := e.status(name); s.State != api.StateRunning || s.Users != nil && s.Users.Root != "" {
				return fmt.Errorf("status %s, users %+v", s.State, s.Users)
			}
			return nil
		})
		if got := owner(); got != 0 {
			t.Fatalf("/bin on disk owned by %d after privateUsers: false, want 0", got)
		}
	})
}
