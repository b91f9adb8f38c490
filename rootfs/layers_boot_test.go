package rootfs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
	"github.com/berthd/berth/internal/userns"
	"github.com/berthd/berth/rootfs"
	"golang.org/x/sys/unix"
)

// layersUsersBase is the first host UID of the machines of
// TestLayeredMachine's private-users cases: far from the other tests'.
const layersUsersBase = 0x6a000000

// TestLayeredMachine runs a machine from an OCI image of the busybox guest,
// a layer of files, one that whites out, makes a directory opaque and
// changes a file, and many more small layers: more lower dirs than one page
// of mount options can name. With private users each layer is an idmapped
// clone under the overlay: the machine's root (its range's first UID on the
// host) owns the image's files inside, and what it writes is owned by 0 on
// disk, as the image's own files are.
func TestLayeredMachine(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	bb := testenv.BusyboxGuest(t)
	tars := [][]byte{
		rootfs.StackTarForTest(t, bb),
		rootfs.MakeFileTarForTest(t, "etc/gone", "gone"),
		rootfs.MakeFileTarForTest(t, "etc/opq/old", "old"),
		rootfs.MakeFileTarForTest(t, "etc/changed", "v1"),
		rootfs.WhiteoutTarForTest(t, "etc", "gone"),
		rootfs.OpaqueTarForTest(t, "etc/opq", "new"),
		rootfs.MakeFileTarForTest(t, "etc/changed", "v2"),
	}
	const fillers = 100
	for i := range fillers {
		tars = append(tars, rootfs.MakeFileTarForTest(t, fmt.Sprintf("etc/fill/%03d", i), "x"))
	}
	ctx := t.Context()
	s, err := rootfs.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.Import(ctx, "bb", rootfs.NewStackForTest("test.example/busybox:layers", tars...), rootfs.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("imported %d layers in %v", len(tars), time.Since(start).Round(time.Millisecond))
	script := `set -e; test ! -e /etc/gone; test "$(cat /etc/changed)" = v2; test "$(ls /etc/opq)" = new
test "$(ls /etc/fill | wc -l)" = ` + fmt.Sprint(fillers) + `; echo "owner $(stat -c %u:%g /bin/busybox) id $(id -u)"
echo "map $(cat /proc/self/uid_map)"; echo mine > /root/marker; echo BERTH-LAYERS-OK`
	for _, private := range []bool{false, true} {
		t.Run(map[bool]string{false: "host-users", true: "private-users"}[private], func(t *testing.T) {
			name := testenv.UniqueName("layers")
			r, err := s.CreateRoot(ctx, name, "bb", rootfs.StrategyOverlay)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Overlay.Lower) != len(tars) || len(strings.Join(r.Overlay.Lower, ":")) < 4096 {
				t.Fatalf("%d lower dirs, %d bytes: want %d, more than a page", len(r.Overlay.Lower), len(strings.Join(r.Overlay.Lower, ":")), len(tars))
			}
			runDir, err := os.MkdirTemp("/run", "berth-layers-test-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(runDir) })
			cfg := machineConfig(r, runDir)
			cfg.Args = []string{"/bin/sh", "-c", script}
			var base uint32
			if private {
				base = layersUsersBase
				u, err := s.PrepareUsers(ctx, name, base, rootfs.IdmapRequired)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Users = &container.Users{Base: u.Base, Size: userns.Size}
			}
			m := machinetest.Start(t, cfg, container.Hooks{})
			ex, err := m.Wait(t)
			console, _ := os.ReadFile(cfg.ConsoleLog)
			if err != nil || ex.Code != 0 || !strings.Contains(string(console), "BERTH-LAYERS-OK") {
				t.Fatalf("machine ended %+v, %v; console:\n%s", ex, err, console)
			}
			if !strings.Contains(string(console), "owner 0:0 id 0") {
				t.Errorf("inside, the image's files or the user are not root's:\n%s", console)
			}
			if want := fmt.Sprintf("map 0 %d %d", base, userns.Size); private && !strings.Contains(strings.Join(strings.Fields(string(console)), " "), want) {
				t.Errorf("the machine's user namespace is not its range (%s):\n%s", want, console)
			}
			// Idmapped, not shifted: on disk the machine's root is 0, as
			// the image's files are.
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(r.Overlay.Upper, "root/marker"), &st); err != nil || st.Uid != 0 || st.Gid != 0 {
				t.Errorf("the file the machine wrote is owned %d:%d on disk (%v), want 0:0", st.Uid, st.Gid, err)
			}
		})
	}
}
