package userns

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"golang.org/x/sys/unix"
)

// fileState is what a shift may change of a file, as a test reads it.
type fileState struct {
	uid, gid, mode uint32
	ino            uint64
	rdev           uint64
	link           string // a symbolic link's target
	caps           string // security.capability, raw
	acl, defACL    string // system.posix_acl_access, _default, raw
}

// snapshot reads every file of the tree at root, mounts inside included,
// without following symbolic links.
func snapshot(t *testing.T, root string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		f := fileState{uid: st.Uid, gid: st.Gid, mode: st.Mode, ino: st.Ino, rdev: st.Rdev}
		if d.Type()&fs.ModeSymlink != 0 {
			f.link, _ = os.Readlink(p)
		} else {
			f.caps, f.acl, f.defACL = lgetxattr(p, xattrCaps), lgetxattr(p, xattrACLAccess), lgetxattr(p, xattrACLDefault)
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func lgetxattr(p, name string) string {
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

const netRaw = 1 << 13 // CAP_NET_RAW

// makeTree fills dir with the kinds of files a root has, owned as an
// unshifted root is, and a tmpfs mounted on mnt/ that the shift must not
// enter. It reports whether the filesystem kept the ACLs and the file
// capability (ramfs keeps no extended attributes at all).
func makeTree(t *testing.T, dir string) (xattrs bool) {
	t.Helper()
	must := func(what string, err error) {
		if err != nil {
			t.Fatalf("make tree: %s: %v", what, err)
		}
	}
	p := func(rel string) string { return filepath.Join(dir, rel) }
	for _, d := range []string{"etc", "usr/bin", "dev", "home/u", "opt", "mnt"} {
		must(d, os.MkdirAll(p(d), 0o755))
	}
	file := func(rel string, mode os.FileMode, uid, gid int) {
		must(rel, os.WriteFile(p(rel), []byte(rel), 0o600))
		must(rel, os.Lchown(p(rel), uid, gid))
		must(rel, os.Chmod(p(rel), mode))
	}
	file("etc/shadow", 0o640, 0, 42)
	file("usr/bin/su", 0o755|os.ModeSetuid, 0, 0)
	must("hard link", os.Link(p("usr/bin/su"), p("usr/bin/su2")))
	file("usr/bin/ping", 0o755, 0, 0)
	file("home/u/f", 0o640, 1000, 1000)
	file("opt/foreign", 0o644, 70000, 70000)
	must("chown home/u", os.Chown(p("home/u"), 1000, 1000))
	must("chmod home/u", os.Chmod(p("home/u"), 0o775|os.ModeSetgid))
	must("symlink", os.Symlink("usr/bin", p("bin")))
	must("lchown symlink", os.Lchown(p("bin"), 1000, 1000))
	must("mknod", unix.Mknod(p("dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must("mkfifo", unix.Mkfifo(p("dev/fifo"), 0o600))
	must("mount tmpfs", unix.Mount("tmpfs", p("mnt"), "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { unix.Unmount(p("mnt"), unix.MNT_DETACH) })
	file("mnt/inside", 0o644, 0, 0)

	err := unix.Lsetxattr(p("usr/bin/ping"), xattrCaps, capXattr(2, netRaw, 0), 0)
	if errors.Is(err, unix.ENOTSUP) {
		return false
	}
	must("setcap", err)
	named := func(user, group uint32) []byte {
		return aclXattr(aclEntry{aclUserObj, 6, undefinedID}, aclEntry{aclUser, 6, user}, aclEntry{aclGroupObj, 4, undefinedID},
			aclEntry{aclGroup, 4, group}, aclEntry{aclMask, 6, undefinedID}, aclEntry{aclOther, 0, undefinedID})
	}
	must("setfacl", unix.Lsetxattr(p("home/u/f"), xattrACLAccess, named(1001, 1002), 0))
	must("setfacl -d", unix.Lsetxattr(p("home/u"), xattrACLDefault, named(1003, 1004), 0))
	return true
}

// shifted is what a file of before is after a shift from 0 to base, as the
// test expects it: owners in 0…65535 moved, modes (set-ID bits too),
// inodes, devices and link targets as they were.
func shifted(f fileState, base uint32) fileState {
	if f.uid < Size {
		f.uid += base
	}
	if f.gid < Size {
		f.gid += base
	}
	return f
}

// TestShift shifts a tree on ramfs (no extended attributes) and on tmpfs
// (with ACLs and a file capability) into a range, with two simulated
// crashes at the worst moments on the way (just after the chown of a
// set-user-ID file and of a file with a capability); then into another
// range by the delta, and back to the host's IDs, which gives the tree
// exactly as it was.
func TestShift(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	for _, fstype := range []string{"ramfs", "tmpfs"} {
		t.Run(fstype, func(t *testing.T) {
			mnt := testenv.MountFS(t, fstype, "")
			root, journal := filepath.Join(mnt, "root"), filepath.Join(mnt, "shift.journal")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			xattrs := makeTree(t, root)
			if fstype == "tmpfs" && !xattrs {
				t.Fatal("tmpfs kept no file capability")
			}
			before := snapshot(t, root)
			const b1, b2 = 0x90000, 0x5E990000
			crashShift(t, root, journal, b1, xattrs)
			checkShifted(t, root, before, b1, xattrs)
			for _, to := range []uint32{b2, 0} {
				from := uint32(b1)
				if to == 0 {
					from = b2
				}
				if _, err := Shift(context.Background(), root, journal, from, to); err != nil {
					t.Fatal(err)
				}
			}
			if after := snapshot(t, root); !reflect.DeepEqual(after, before) {
				t.Errorf("shifted to %d, to %d and back, the tree differs:\n%v\nwas\n%v", b1, b2, after, before)
			}
		})
	}
}

// crashShift shifts root from 0 to base in three runs: the first dies just
// after the chown of the file with a capability (which the chown dropped),
// the second just after the chown of the set-user-ID file (which the chown
// left without its bit), the third completes.
func crashShift(t *testing.T, root, journal string, base uint32, xattrs bool) {
	t.Helper()
	crash := errors.New("simulated crash")
	t.Cleanup(func() { testHookAfterChown = nil })
	for _, at := range []string{"usr/bin/ping", "usr/bin/su"} { // in the walk's order
		testHookAfterChown = func(rel string) error {
			if rel == at {
				return crash
			}
			return nil
		}
		if _, err := Shift(context.Background(), root, journal, 0, base); !errors.Is(err, crash) {
			t.Fatalf("the run to crash at %s: %v", at, err)
		}
		st := snapshot(t, root)[at]
		if at == "usr/bin/su" && st.mode&unix.S_ISUID != 0 {
			t.Error("the crash came after su's mode was restored, not between its chown and the restore")
		}
		if at == "usr/bin/ping" && xattrs && st.caps != "" {
			t.Error("the crash came after ping's capability was restored")
		}
		if _, err := os.Stat(journal); err != nil {
			t.Errorf("after a crash: %v", err)
		}
	}
	testHookAfterChown = nil
	rep, err := Shift(context.Background(), root, journal, 0, base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(journal); !os.IsNotExist(err) {
		t.Errorf("the completed shift left its journal: %v", err)
	}
	// The foreign file's uid and gid; on tmpfs also nothing else.
	if rep.Outside != 2 || len(rep.Examples) != 2 || !strings.HasSuffix(rep.Examples[0], "opt/foreign: uid 70000") {
		t.Errorf("outside IDs: %d, %q", rep.Outside, rep.Examples)
	}
	if fmt.Sprint(rep.Mounts) != "[mnt]" {
		t.Errorf("mounts: %q", rep.Mounts)
	}
	t.Logf("%+v", rep)
}

// checkShifted compares the tree with before shifted to base, file by file.
func checkShifted(t *testing.T, root string, before map[string]fileState, base uint32, xattrs bool) {
	t.Helper()
	after := snapshot(t, root)
	for rel, was := range before {
		want := shifted(was, base)
		switch {
		case rel == "mnt" || strings.HasPrefix(rel, "mnt/"):
			want = was // another filesystem: not entered
		case rel == "usr/bin/ping" && xattrs:
			want.caps = string(capXattr(3, netRaw, base))
		case rel == "home/u/f" && xattrs:
			want.acl = string(aclXattr(aclEntry{aclUserObj, 6, undefinedID}, aclEntry{aclUser, 6, base + 1001}, aclEntry{aclGroupObj, 4, undefinedID},
				aclEntry{aclGroup, 4, base + 1002}, aclEntry{aclMask, 6, undefinedID}, aclEntry{aclOther, 0, undefinedID}))
		case rel == "home/u" && xattrs:
			want.defACL = string(aclXattr(aclEntry{aclUserObj, 6, undefinedID}, aclEntry{aclUser, 6, base + 1003}, aclEntry{aclGroupObj, 4, undefinedID},
				aclEntry{aclGroup, 4, base + 1004}, aclEntry{aclMask, 6, undefinedID}, aclEntry{aclOther, 0, undefinedID}))
		}
		if got := after[rel]; got != want {
			t.Errorf("%s after the shift:\n got %+v\nwant %+v", rel, got, want)
		}
	}
	if su, su2 := after["usr/bin/su"], after["usr/bin/su2"]; su.ino != su2.ino || su.mode&unix.S_ISUID == 0 {
		t.Errorf("su and su2 are %d and %d, su's mode %o", su.ino, su2.ino, su.mode)
	}
	if len(after) != len(before) {
		t.Errorf("the tree has %d files, had %d", len(after), len(before))
	}
}

// TestShiftRefuses: unaligned bases and a journal of another shift.
func TestShiftRefuses(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root := t.TempDir()
	if _, err := Shift(context.Background(), root, root+".journal", 0, 0x90001); err == nil || !strings.Contains(err.Error(), "multiples of 65536") {
		t.Errorf("an unaligned base: %v", err)
	}
	journal := filepath.Join(t.TempDir(), "j")
	os.WriteFile(journal, []byte(journalHeader(0, 0x10000)+"\n"), 0o600)
	if _, err := Shift(context.Background(), root, journal, 0, 0x90000); err == nil || !strings.Contains(err.Error(), "not the journal of this shift") {
		t.Errorf("another shift's journal: %v", err)
	}
}
