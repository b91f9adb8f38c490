package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestHostileArchives extracts crafted archives next to a canary directory and
// checks that each is rejected or contained: the canary and everything else
// outside the destination stay as they were. It runs with openat2 and with the
// userspace resolver used on kernels without it.
func TestHostileArchives(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	for _, slow := range []bool{false, true} {
		name := "openat2"
		if slow {
			name = "userspace-resolver"
		}
		t.Run(name, func(t *testing.T) {
			forceSlowResolve = slow
			t.Cleanup(func() { forceSlowResolve = false })
			testHostile(t)
		})
	}
}

func testHostile(t *testing.T) {
	type check func(t *testing.T, dest string)
	inside := func(rel, body string) check {
		return func(t *testing.T, dest string) {
			b, err := os.ReadFile(filepath.Join(dest, rel))
			if err != nil || string(b) != body {
				t.Errorf("want %s inside the destination with %q; got %q, %v", rel, body, b, err)
			}
		}
	}
	isLink := func(rel string) check {
		return func(t *testing.T, dest string) {
			if fi, err := os.Lstat(filepath.Join(dest, rel)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("want %s to be a symlink inside the destination: %v", rel, err)
			}
		}
	}
	for _, tc := range []struct {
		name   string
		ents   func(canary string) []ent
		reject string // error text when the archive must be refused
		// contained: the entry aimed at CANARY/file lands at DEST/CANARY/file
		contained bool
		checks    []check
	}{
		{name: "dotdot", ents: func(c string) []ent { return []ent{file("../canary/file", "pwned")} }, reject: "climbs out"},
		{name: "dotdot nested", ents: func(c string) []ent { return []ent{dir("a/"), file("a/../../canary/file", "pwned")} }, reject: "climbs out"},
		{name: "dotdot deep", ents: func(c string) []ent {
			return []ent{file(strings.Repeat("../", 30)+strings.TrimPrefix(c, "/")+"/file", "pwned")}
		}, reject: "climbs out"},
		{name: "absolute path", ents: func(c string) []ent { return []ent{file(c+"/file", "contained")} }, contained: true},
		{name: "symlink dir outside then write through it", ents: func(c string) []ent {
			return []ent{dir(c + "/"), symlink("evil", c), file("evil/file", "contained")}
		}, contained: true},
		{name: "relative symlink climbing out then write through it", ents: func(c string) []ent {
			return []ent{dir(c + "/"), dir("a/"), symlink("a/up", strings.Repeat("../", 20)+strings.TrimPrefix(c, "/")), file("a/up/file", "contained")}
		}, contained: true},
		{name: "symlink to file outside then overwrite it", ents: func(c string) []ent {
			return []ent{symlink("evil", c+"/file"), file("evil", "replaced")}
		}, checks: []check{inside("evil", "replaced")}},
		{name: "symlink to file outside kept as a link", ents: func(c string) []ent {
			return []ent{symlink("etc-passwd", c+"/file")}
		}, checks: []check{isLink("etc-passwd")}},
		{name: "hard link to absolute file outside", ents: func(c string) []ent {
			return []ent{hardlink("hl", c+"/file")}
		}, reject: "hard link target"},
		{name: "hard link climbing out", ents: func(c string) []ent {
			return []ent{hardlink("hl", "../canary/file")}
		}, reject: "climbs out"},
		{name: "hard link through a symlink outside", ents: func(c string) []ent {
			return []ent{symlink("s", c), hardlink("hl", "s/file")}
		}, reject: "hard link target"},
		{name: "hard link to a symlink outside then write through", ents: func(c string) []ent {
			return []ent{symlink("s", c+"/file"), hardlink("h", "s"), file("h", "replaced")}
		}, checks: []check{inside("h", "replaced"), isLink("s")}},
		{name: "directory replaced by symlink mid-archive", ents: func(c string) []ent {
			return []ent{dir(c + "/"), dir("d/"), file("d/f", "x"), symlink("d", c), file("d/file", "contained"), dir("d/sub/"), file("d/sub/x", "y")}
		}, contained: true, checks: []check{isLink("d")}},
		{name: "directory replaced by symlink, then directory again", ents: func(c string) []ent {
			return []ent{dir("d/"), symlink("d", c), dir("d/"), file("d/file", "inside")}
		}, checks: []check{inside("d/file", "inside")}},
		{name: "symlink chain through the root", ents: func(c string) []ent {
			return []ent{dir(c + "/"), symlink("a", "/../../.."), symlink("b", "a"+c), file("b/file", "contained")}
		}, contained: true},
		{name: "symlink loop", ents: func(c string) []ent {
			return []ent{symlink("a", "b"), symlink("b", "a"), file("a/x", "y")}
		}, reject: "too many levels of symbolic links"},
		{name: "dangling symlink as a parent", ents: func(c string) []ent {
			return []ent{symlink("a", "/nowhere"), file("a/x", "y")}
		}, reject: "does not exist"},
		{name: "symlink outside, target not in the archive, then write through", ents: func(c string) []ent {
			return []ent{symlink("evil", c), file("evil/file", "pwned")}
		}, reject: "does not exist"},
		{name: "file as a parent", ents: func(c string) []ent {
			return []ent{file("f", "x"), file("f/x", "y")}
		}, reject: "not a directory"},
		{name: "tar bomb of deep paths", ents: func(c string) []ent {
			return []ent{file(strings.Repeat("d/", 300)+"f", "x")}
		}, reject: "directories deep"},
		{name: "tar bomb of long names", ents: func(c string) []ent {
			return []ent{file(strings.Repeat(strings.Repeat("n", 200)+"/", 25)+"f", "x")}
		}, reject: "bytes long"},
		{name: "device node at an absolute path", ents: func(c string) []ent {
			return []ent{{name: c + "/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3}}
		}},
		{name: "root replaced by a symlink", ents: func(c string) []ent {
			return []ent{symlink("./", c)}
		}, reject: "root must be a directory"},
		{name: "setuid file written through planted dir symlink", ents: func(c string) []ent {
			return []ent{dir(c + "/"), symlink("bin", c), {name: "bin/su", typ: tar.TypeReg, mode: 0o4755, body: "#!"}}
		}},
		{name: "overlay xattrs dropped", ents: func(c string) []ent {
			return []ent{{name: "d/", typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{"trusted.overlay.opaque": "y"}}}
		}, checks: []check{func(t *testing.T, d string) {
			if _, err := unix.Lgetxattr(filepath.Join(d, "d"), "trusted.overlay.opaque", make([]byte, 8)); err != unix.ENODATA {
				t.Errorf("trusted.overlay.opaque was kept: %v", err)
			}
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			canary := filepath.Join(base, "canary")
			if err := os.Mkdir(canary, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(canary, "file"), []byte("canary"))
			dest := filepath.Join(base, "dest")
			if err := os.Mkdir(dest, 0o755); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, base, dest)
			data := makeTar(t, tc.ents(canary)...)
			err := extractTar(context.Background(), bytes.NewReader(data), dest)
			if tc.reject != "" {
				if err == nil || !strings.Contains(err.Error(), tc.reject) {
					t.Errorf("extract = %v, want it refused with %q", err, tc.reject)
				}
			} else if err != nil {
				t.Errorf("extract = %v, want it contained", err)
			}
			if after := snapshot(t, base, dest); after != before {
				t.Errorf("outside the destination changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if b, _ := os.ReadFile(filepath.Join(canary, "file")); string(b) != "canary" {
				t.Errorf("canary file now holds %q", b)
			}
			if tc.contained {
				inside(strings.TrimPrefix(canary, "/")+"/file", "contained")(t, dest)
			}
			if tc.name == "setuid file written through planted dir symlink" {
				fi, err := os.Lstat(filepath.Join(dest, canary, "su"))
				if err != nil || fi.Mode()&os.ModeSetuid == 0 {
					t.Errorf("want the setuid file contained at %s: %v", canary+"/su", err)
				}
			}
			for _, c := range tc.checks {
				c(t, dest)
			}
		})
	}
}

// snapshot describes every file under base except under skip: name, type, size,
// mode and content of small files.
func snapshot(t *testing.T, base, skip string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		b.WriteString(p + " " + fi.Mode().String())
		if fi.Mode().IsRegular() {
			c, _ := os.ReadFile(p)
			b.WriteString(" " + string(c))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestExtractKeepsMetadata checks what a root filesystem needs from an archive.
func TestExtractKeepsMetadata(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	dest := t.TempDir()
	capv := "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" // cap_net_bind_service+ep
	data := makeTar(t,
		ent{name: "./", typ: tar.TypeDir, mode: 0o755},
		ent{name: "usr/bin/", typ: tar.TypeDir, mode: 0o755},
		ent{name: "usr/bin/passwd", typ: tar.TypeReg, mode: 0o4755, body: "suid"},
		ent{name: "usr/bin/crontab", typ: tar.TypeReg, mode: 0o2755, uid: 0, gid: 107, body: "sgid"},
		ent{name: "usr/bin/ping", typ: tar.TypeReg, mode: 0o755, body: "ping", xattrs: map[string]string{"security.capability": capv, "user.note": "hi"}},
		ent{name: "usr/bin/hl", typ: tar.TypeLink, link: "usr/bin/ping"},
		ent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		ent{name: "home/u/", typ: tar.TypeDir, mode: 0o700, uid: 1000, gid: 1000},
		ent{name: "home/u/f", typ: tar.TypeReg, mode: 0o600, uid: 1000, gid: 1000, body: "mine"},
		ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		ent{name: "dev/loop0", typ: tar.TypeBlock, mode: 0o660, gid: 6, major: 7, minor: 0},
		ent{name: "run/fifo", typ: tar.TypeFifo, mode: 0o620},
		ent{name: "lib", typ: tar.TypeSymlink, link: "usr/lib", uid: 5, gid: 5},
	)
	if err := extractTar(context.Background(), bytes.NewReader(data), dest); err != nil {
		t.Fatal(err)
	}
	st := func(rel string) unix.Stat_t {
		var s unix.Stat_t
		if err := unix.Lstat(filepath.Join(dest, rel), &s); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		return s
	}
	for _, tc := range []struct {
		rel      string
		mode     uint32
		uid, gid uint32
	}{
		{"usr/bin/passwd", unix.S_IFREG | 0o4755, 0, 0},
		{"usr/bin/crontab", unix.S_IFREG | 0o2755, 0, 107},
		{"tmp", unix.S_IFDIR | 0o1777, 0, 0},
		{"home/u", unix.S_IFDIR | 0o700, 1000, 1000},
		{"home/u/f", unix.S_IFREG | 0o600, 1000, 1000},
		{"dev/null", unix.S_IFCHR | 0o666, 0, 0},
		{"dev/loop0", unix.S_IFBLK | 0o660, 0, 6},
		{"run/fifo", unix.S_IFIFO | 0o620, 0, 0},
		{"home", unix.S_IFDIR | 0o755, 0, 0}, // implied by home/u/
		{"lib", unix.S_IFLNK | 0o777, 5, 5},
	} {
		s := st(tc.rel)
		if s.Mode != tc.mode || s.Uid != tc.uid || s.Gid != tc.gid {
			t.Errorf("%s: mode %o owner %d:%d, want %o %d:%d", tc.rel, s.Mode, s.Uid, s.Gid, tc.mode, tc.uid, tc.gid)
		}
	}
	if s := st("dev/null"); unix.Major(s.Rdev) != 1 || unix.Minor(s.Rdev) != 3 {
		t.Errorf("dev/null is %d:%d", unix.Major(s.Rdev), unix.Minor(s.Rdev))
	}
	if a, b := st("usr/bin/ping"), st("usr/bin/hl"); a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link not kept: inodes %d %d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(filepath.Join(dest, "usr/bin/ping"), "security.capability", buf); err != nil || string(buf[:n]) != capv {
		t.Errorf("security.capability = %q, %v", buf[:n], err)
	}
	if n, err := unix.Lgetxattr(filepath.Join(dest, "usr/bin/ping"), "user.note", buf); err != nil || string(buf[:n]) != "hi" {
		t.Errorf("user.note = %q, %v", buf[:n], err)
	}
	for _, rel := range []string{"usr/bin/passwd", "usr/bin", "run/fifo", "lib"} {
		if s := st(rel); s.Mtim.Sec != testTime.Unix() || s.Mtim.Nsec != int64(testTime.Nanosecond()) {
			t.Errorf("%s: mtime %d.%09d, want %d.%09d", rel, s.Mtim.Sec, s.Mtim.Nsec, testTime.Unix(), testTime.Nanosecond())
		}
	}
	if s := st("home"); s.Mtim.Sec != 0 {
		t.Errorf("implied directory home has mtime %d, want 0 (deterministic)", s.Mtim.Sec)
	}
}

// TestExtractRejectsGarbage checks that what is not a tar archive fails with a
// clear error and writes nothing.
func TestExtractRejectsGarbage(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	dest := t.TempDir()
	err := extractTar(context.Background(), strings.NewReader(strings.Repeat("garbage!", 200)), dest)
	if err == nil || !strings.Contains(err.Error(), "read archive") {
		t.Errorf("extract garbage = %v", err)
	}
	ents, _ := os.ReadDir(dest)
	if len(ents) != 0 {
		t.Errorf("garbage left %d entries", len(ents))
	}
	if errors.Is(err, ErrNotFound) {
		t.Error("wrong class")
	}
}
