package rootfs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestPlanShift: what a directory root needs, by its record, the range it
// starts in, the requirement and whether its filesystem can be idmapped.
func TestPlanShift(t *testing.T) {
	const b, c = 0x90000, 0xA0000
	to := func(x uint32) *uint32 { return &x }
	canIdmap := func(string) error { return nil }
	cannot := func(string) error { return errors.New("/s/machines/m/rootfs is on ramfs, which cannot be idmapped") }
	for _, tc := range []struct {
		name     string
		shift    *Shift
		base     uint32
		idmap    Idmap
		probe    func(string) error
		steps    []shiftStep
		shifted  bool
		whyOrErr string
	}{
		{"idmapped", nil, b, IdmapOptional, canIdmap, nil, false, ""},
		{"idmapped, required", nil, b, IdmapRequired, canIdmap, nil, false, ""},
		{"cannot idmap: shift once", nil, b, IdmapOptional, cannot, []shiftStep{{0, b}}, true, "is on ramfs"},
		{"cannot idmap, required", nil, b, IdmapRequired, cannot, nil, false, "security.idmap: required forbids shifting"},
		{"shifted before: stays, even where idmap works", &Shift{Base: b, Why: "ramfs"}, b, IdmapOptional, canIdmap, nil, true, "ramfs"},
		{"shifted before, required: stays", &Shift{Base: b, Why: "ramfs"}, b, IdmapRequired, cannot, nil, true, "ramfs"},
		{"shifted to another base: by the delta", &Shift{Base: b, Why: "ramfs"}, c, IdmapOptional, cannot, []shiftStep{{b, c}}, true, "ramfs"},
		{"shifted to another base, required", &Shift{Base: b, Why: "ramfs"}, c, IdmapRequired, canIdmap, nil, false, "another shift"},
		{"host users: back to 0", &Shift{Base: b}, 0, IdmapOptional, canIdmap, []shiftStep{{b, 0}}, false, ""},
		{"host users, never shifted", nil, 0, IdmapOptional, cannot, nil, false, ""},
		{"interrupted: completed", &Shift{Base: 0, To: to(b), Why: "ramfs"}, b, IdmapOptional, cannot, []shiftStep{{0, b}}, true, "ramfs"},
		{"interrupted: completed, then the delta", &Shift{Base: 0, To: to(b), Why: "ramfs"}, c, IdmapOptional, cannot, []shiftStep{{0, b}, {b, c}}, true, "ramfs"},
		{"interrupted, required: completed", &Shift{Base: 0, To: to(b), Why: "ramfs"}, b, IdmapRequired, cannot, []shiftStep{{0, b}}, true, "ramfs"},
	} {
		r := &Root{Machine: "m", Dir: "/s/machines/m/rootfs", Shift: tc.shift}
		steps, u, err := planShift(r, tc.base, tc.idmap, tc.probe)
		got := u.Why
		if err != nil {
			got = err.Error()
			if !errors.Is(err, ErrUnsupported) {
				t.Errorf("%s: %v is not ErrUnsupported", tc.name, err)
			}
		}
		if !slices.Equal(steps, tc.steps) || u.Shifted != tc.shifted || !strings.Contains(got, tc.whyOrErr) || (tc.whyOrErr == "") != (got == "") {
			t.Errorf("%s: steps %v, %+v, %v; want %v, shifted %v, %q", tc.name, steps, u, err, tc.steps, tc.shifted, tc.whyOrErr)
		}
		if err == nil && u.Base != tc.base {
			t.Errorf("%s: base %d, want %d", tc.name, u.Base, tc.base)
		}
	}
}

// owner returns the owner of a file in a root, not following a link.
func owner(t *testing.T, p string) (uid, gid, mode uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid, st.Mode
}

// TestPrepareUsersOverlay: an overlay root on ext4 is idmapped and left as
// it is; one on ramfs is refused with the way out.
func TestPrepareUsersOverlay(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	const base = 0x90000
	for _, fs := range []struct{ name, state string }{
		{"ext4", filepath.Join(t.TempDir(), "state")},
		{"ramfs", testenv.MountFS(t, "ramfs", "")},
	} {
		s := openStoreAt(t, fs.state)
		if _, err := s.Import(ctx, "tiny", Dir{Path: smallTree(t)}, ImportOptions{}); err != nil {
			t.Fatal(err)
		}
		r, err := s.CreateRoot(ctx, "m", "tiny", StrategyOverlay)
		if err != nil {
			t.Fatal(err)
		}
		u, err := s.PrepareUsers(ctx, "m", base, IdmapOptional)
		if fs.name == "ramfs" {
			if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "is on ramfs") ||
				!strings.Contains(err.Error(), "root.strategy: copy") || !strings.Contains(err.Error(), "privateUsers: false") {
				t.Errorf("overlay root on ramfs: %+v, %v", u, err)
			}
			t.Log(err)
			continue
		}
		if err != nil || u != (Users{Base: base}) {
			t.Fatalf("overlay root on %s: %+v, %v", fs.name, u, err)
		}
		if again, _ := s.Root("m"); again.Shift != nil {
			t.Errorf("an idmapped root was recorded as shifted: %+v", again.Shift)
		}
		if uid, _, _ := owner(t, r.Overlay.Upper); uid != 0 {
			t.Errorf("the upper directory is owned by %d", uid)
		}
	}
}

// TestPrepareUsersShift: a copy root on ramfs is refused when idmap is
// required; else shifted once (a file added later stays as it is: no second
// walk), cloned with its record, shifted by the delta in the clone, shifted
// back for the host's users, and an interrupted shift is completed.
func TestPrepareUsersShift(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	const b, c = 0x90000, 0xA0000
	s := openStoreAt(t, testenv.MountFS(t, "ramfs", ""))
	if _, err := s.Import(ctx, "tiny", Dir{Path: smallTree(t)}, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := s.CreateRoot(ctx, "m", "tiny", StrategyCopy)
	if err != nil {
		t.Fatal(err)
	}
	hello := filepath.Join(r.Dir, "usr/bin/hello")
	if _, err := s.PrepareUsers(ctx, "m", b, IdmapRequired); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "is on ramfs") || !strings.Contains(err.Error(), "security.idmap: optional") {
		t.Errorf("required on ramfs: %v", err)
	}
	if uid, _, _ := owner(t, hello); uid != 0 {
		t.Fatalf("the refused start shifted the root: hello is owned by %d", uid)
	}
	u, err := s.PrepareUsers(ctx, "m", b, IdmapOptional)
	if err != nil || !u.Shifted || u.Base != b || !strings.Contains(u.Why, "ramfs") {
		t.Fatalf("optional on ramfs: %+v, %v", u, err)
	}
	if uid, gid, mode := owner(t, hello); uid != b || gid != b || mode&unix.S_ISUID == 0 {
		t.Errorf("hello after the shift: %d:%d %o", uid, gid, mode)
	}
	if uid, _, _ := owner(t, filepath.Join(r.Dir, "home/u")); uid != b+1000 {
		t.Errorf("home/u after the shift: %d", uid)
	}
	if got, _ := s.Root("m"); got.Shift == nil || got.Shift.Base != b || got.Shift.To != nil {
		t.Errorf("the record after the shift: %+v", got.Shift)
	}
	// Not again: a file the host put there (owned 0) stays as it is.
	later := filepath.Join(r.Dir, "later")
	writeFile(t, later, nil)
	writeFile(t, filepath.Join(r.Dir, "etc/machine-id"), []byte("0123456789abcdef0123456789abcdef\n"))
	os.Lchown(filepath.Join(r.Dir, "etc/machine-id"), b, b)
	if u, err := s.PrepareUsers(ctx, "m", b, IdmapRequired); err != nil || !u.Shifted {
		t.Fatalf("the second start: %+v, %v", u, err)
	}
	if uid, _, _ := owner(t, later); uid != 0 {
		t.Errorf("the second start walked the root again: later is owned by %d", uid)
	}
	checkShiftedClone(t, s, b, c)
	// The host's users: back to 0.
	if u, err := s.PrepareUsers(ctx, "m", 0, IdmapOptional); err != nil || u.Shifted {
		t.Fatalf("back to the host's users: %+v, %v", u, err)
	}
	if uid, _, mode := owner(t, hello); uid != 0 || mode&unix.S_ISUID == 0 {
		t.Errorf("hello shifted back: %d %o", uid, mode)
	}
	if got, _ := s.Root("m"); got.Shift != nil {
		t.Errorf("the record after shifting back: %+v", got.Shift)
	}
	checkInterruptedShift(t, s, b)
}

// checkShiftedClone clones the machine m, whose root is shifted to b: the
// clone is recorded shifted to b, its fresh machine ID is the guest's, and
// its first start in the range at c shifts it by the delta.
func checkShiftedClone(t *testing.T, s *Store, b, c uint32) {
	t.Helper()
	ctx := ctxT(t)
	cl, err := s.CloneRoot(ctx, "m", "m2")
	if err != nil {
		t.Fatal(err)
	}
	if cl.Shift == nil || cl.Shift.Base != b {
		t.Fatalf("the clone's record: %+v", cl.Shift)
	}
	if uid, _, _ := owner(t, filepath.Join(cl.Dir, "etc/machine-id")); uid != b {
		t.Errorf("the clone's reset machine ID is owned by %d, not the root's range", uid)
	}
	if _, err := s.PrepareUsers(ctx, "m2", c, IdmapRequired); err == nil || !strings.Contains(err.Error(), "another shift") {
		t.Errorf("a delta shift with idmap required: %v", err)
	}
	u, err := s.PrepareUsers(ctx, "m2", c, IdmapOptional)
	if err != nil || !u.Shifted || u.Base != c {
		t.Fatalf("the clone's start in another range: %+v, %v", u, err)
	}
	if uid, _, _ := owner(t, filepath.Join(cl.Dir, "usr/bin/hello")); uid != c {
		t.Errorf("the clone's hello: %d, want %d", uid, c)
	}
	if uid, _, _ := owner(t, filepath.Join(cl.Dir, "later")); uid != 0 {
		t.Errorf("a file outside the range moved with the delta: %d", uid)
	}
}

// checkInterruptedShift leaves m's root as a crash in the middle of a shift
// to b would (recorded target, one file done) and starts it: the shift is
// completed and recorded done.
func checkInterruptedShift(t *testing.T, s *Store, b uint32) {
	t.Helper()
	r, err := s.Root("m")
	if err != nil {
		t.Fatal(err)
	}
	to := b
	r.Shift = &Shift{Base: 0, To: &to, Why: "ramfs"}
	if err := writeJSON(filepath.Join(r.Path, rootMetaFile), r); err != nil {
		t.Fatal(err)
	}
	os.Lchown(filepath.Join(r.Dir, "etc"), int(b), int(b))
	if _, err := s.CloneRoot(ctxT(t), "m", "m3"); !errors.Is(err, ErrBusy) {
		t.Errorf("cloning a root midway through a shift: %v", err)
	}
	// STATE/machines opened by hand is closed again on the way.
	os.Chmod(s.machines, 0o755)
	u, err := s.PrepareUsers(ctxT(t), "m", b, IdmapOptional)
	if err != nil || !u.Shifted || u.Why != "ramfs" {
		t.Fatalf("after the interrupted shift: %+v, %v", u, err)
	}
	for _, rel := range []string{"etc", "etc/os-release", "usr/bin/hello"} {
		if uid, _, _ := owner(t, filepath.Join(r.Dir, rel)); uid != b {
			t.Errorf("%s after completing the shift: %d", rel, uid)
		}
	}
	if got, _ := s.Root("m"); got.Shift == nil || got.Shift.Base != b || got.Shift.To != nil {
		t.Errorf("the record after completing the shift: %+v", got.Shift)
	}
	if _, _, mode := owner(t, s.machines); mode&0o777 != 0o700 {
		t.Errorf("STATE/machines is %o", mode&0o777)
	}
}
