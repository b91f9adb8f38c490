package safecopy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"

	"golang.org/x/sys/unix"
)

// guestTree makes a directory that stands for a machine's root and a Guest
// of it.
func guestTree(t *testing.T, g Guest) (string, *Guest) {
	t.Helper()
	dir := t.TempDir()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	g.Root = fd
	if g.Name == "" {
		g.Name = "web"
	}
	return dir, &g
}

func write(t *testing.T, p, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(p, uint32(mode)); err != nil { // the set-ID bits as numbers
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// noTemps fails when a copy left a temporary file under dir.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(filepath.Base(p), ".#berth.") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

func TestCopyToTreeKeepsModesTimesLinksOwners(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root, g := guestTree(t, Guest{Private: true, Offset: 100000})
	src := filepath.Join(t.TempDir(), "app")
	write(t, filepath.Join(src, "bin/tool"), "#!/bin/sh\n", 0o4755)
	write(t, filepath.Join(src, "data/a"), "aaa", 0o640)
	if err := unix.Chmod(filepath.Join(src, "data"), 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "data/a"), filepath.Join(src, "data/b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(src, "data/a"), 1000, 1001); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(src, "bin/tool"), 70000, 70000); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(filepath.Join(src, "bin/tool"), 0o4755); err != nil { // chown cleared it
		t.Fatal(err)
	}
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(src, "data/a"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "opt"), 0o755); err != nil {
		t.Fatal(err)
	}
	sum, err := CopyTo(context.Background(), g, src, "/opt", Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(root, "opt/app")
	if got := read(t, filepath.Join(in, "data/a")); got != "aaa" {
		t.Errorf("data/a = %q", got)
	}
	st := lstat(t, filepath.Join(in, "data/a"))
	if st.Uid != 101000 || st.Gid != 101001 || st.Mode&0o7777 != 0o640 || st.Mtim.Sec != old.Unix() {
		t.Errorf("data/a: uid %d gid %d mode %o mtime %d; want 101000 101001 640 %d", st.Uid, st.Gid, st.Mode&0o7777, st.Mtim.Sec, old.Unix())
	}
	if b := lstat(t, filepath.Join(in, "data/b")); b.Ino != st.Ino {
		t.Errorf("data/b is not a hard link of data/a any more")
	}
	if st := lstat(t, filepath.Join(in, "data")); st.Mode&0o7777 != 0o1777 {
		t.Errorf("data: mode %o, want 1777", st.Mode&0o7777)
	}
	// A host owner above the machine's range is the machine's nobody; a
	// set-user-ID program copied in stays one.
	if st := lstat(t, filepath.Join(in, "bin/tool")); st.Uid != 100000+Nobody || st.Mode&0o7777 != 0o4755 {
		t.Errorf("bin/tool: uid %d mode %o, want %d 4755", st.Uid, st.Mode&0o7777, 100000+Nobody)
	}
	if l, err := os.Readlink(filepath.Join(in, "link")); err != nil || l != "/etc/passwd" {
		t.Errorf("link = %q, %v", l, err)
	}
	if st := lstat(t, in); st.Uid != 100000 {
		t.Errorf("app: uid %d, want 100000", st.Uid)
	}
	want := Summary{Files: 2, Dirs: 3, Symlinks: 1, Hardlinks: 1, Bytes: 3 + 10, Nobody: 1}
	if sum.Files != want.Files || sum.Dirs != want.Dirs || sum.Symlinks != want.Symlinks || sum.Hardlinks != want.Hardlinks || sum.Bytes != want.Bytes || sum.Nobody != want.Nobody {
		t.Errorf("summary %+v, want %+v", *sum, want)
	}
	if sum.Destination != "web:/opt/app" {
		t.Errorf("destination %q", sum.Destination)
	}
	noTemps(t, root)
}

func TestCopyFromMapsOwnersAndClearsSetID(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root, g := guestTree(t, Guest{Private: true, Offset: 100000})
	write(t, filepath.Join(root, "srv/x"), "x", 0o6755)
	write(t, filepath.Join(root, "srv/y"), "y", 0o644)
	if err := os.Lchown(filepath.Join(root, "srv"), 100000, 100000); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(root, "srv/x"), 100000, 100000); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(filepath.Join(root, "srv/x"), 0o6755); err != nil { // chown cleared it
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(root, "srv/y"), 101000, 5); err != nil { // 5: outside the range
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out")
	sum, err := CopyFrom(context.Background(), g, "/srv", dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, filepath.Join(dst, "x")); st.Uid != 0 || st.Mode&0o7777 != 0o755 {
		t.Errorf("x: uid %d mode %o, want 0 755 (set-ID cleared)", st.Uid, st.Mode&0o7777)
	}
	if st := lstat(t, filepath.Join(dst, "y")); st.Uid != 1000 || st.Gid != Nobody {
		t.Errorf("y: %d:%d, want 1000:%d", st.Uid, st.Gid, Nobody)
	}
	if sum.SetIDCleared != 1 || sum.Nobody != 1 || sum.Files != 2 {
		t.Errorf("summary %+v", *sum)
	}
}

// The guest's symbolic links resolve inside its root: one to /etc, one
// climbing with .., and .. in the path itself never reach the host's files.
func TestGuestSymlinksStayInRoot(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root, g := guestTree(t, Guest{})
	host := t.TempDir()
	write(t, filepath.Join(host, "secret"), "host secret", 0o600)
	rel, err := filepath.Rel(root, host)
	if err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"etc-link": "/etc", "up": "../../../../../../" + rel, "abs": host} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	out := t.TempDir()
	for _, p := range []string{"/up/secret", "/abs/secret", "/../../../../" + rel + "/secret", "/etc-link/passwd"} {
		if _, err := CopyFrom(context.Background(), g, p, filepath.Join(out, "got"), Options{}); err == nil {
			t.Errorf("copy-from %s: copied %q", p, read(t, filepath.Join(out, "got")))
			os.Remove(filepath.Join(out, "got"))
		}
	}
	// Written through the same links, files land inside the root.
	src := filepath.Join(t.TempDir(), "f")
	write(t, src, "new", 0o644)
	if err := os.MkdirAll(filepath.Join(root, host), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := CopyTo(context.Background(), g, src, "/abs/", Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(host, "f")); err == nil {
		t.Fatal("copy-to /abs/ wrote to the host directory the link names")
	}
	if got := read(t, filepath.Join(root, host, "f")); got != "new" {
		t.Errorf("inside: %q", got)
	}
	// A link copied out is a link, its target not read.
	if _, err := CopyFrom(context.Background(), g, "/abs", filepath.Join(out, "abs"), Options{}); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(out, "abs")); err != nil || l != host {
		t.Errorf("abs copied as %q, %v: want the link", l, err)
	}
}

// A name swapped for a link to a host file after it was checked: berth
// reads the inode it checked, and writes into the directory it resolved.
func TestSwappedNames(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root, g := guestTree(t, Guest{})
	host := t.TempDir()
	write(t, filepath.Join(host, "secret"), "host secret", 0o600)
	write(t, filepath.Join(root, "d/file"), "guest data", 0o644)
	t.Cleanup(func() { testHook = nil })
	testHook = func(at, p string) {
		if at == "stat" && p == "/d/file" {
			if err := os.Rename(filepath.Join(root, "d/file"), filepath.Join(root, "moved")); err != nil {
				t.Error(err)
			}
			if err := os.Symlink(filepath.Join(host, "secret"), filepath.Join(root, "d/file")); err != nil {
				t.Error(err)
			}
		}
	}
	out := filepath.Join(t.TempDir(), "d")
	if _, err := CopyFrom(context.Background(), g, "/d", out, Options{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(out, "file")); got != "guest data" {
		t.Errorf("copied %q, want the checked inode's guest data", got)
	}

	// copy-to: the destination directory is replaced by a link to a host
	// directory once the copy has it open.
	src := filepath.Join(t.TempDir(), "tree")
	write(t, filepath.Join(src, "a"), "a", 0o644)
	write(t, filepath.Join(src, "b"), "b", 0o644)
	if err := os.Mkdir(filepath.Join(root, "in"), 0o755); err != nil {
		t.Fatal(err)
	}
	testHook = func(at, p string) {
		if at == "stat" && p == filepath.Join(src, "b") {
			if err := os.Rename(filepath.Join(root, "in/tree"), filepath.Join(root, "in/old")); err != nil {
				t.Error(err)
			}
			if err := os.Symlink(host, filepath.Join(root, "in/tree")); err != nil {
				t.Error(err)
			}
		}
	}
	if _, err := CopyTo(context.Background(), g, src, "/in", Options{}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(host); len(ents) != 1 {
		t.Errorf("host directory has %d entries, want only its secret", len(ents))
	}
	if got := read(t, filepath.Join(root, "in/old/b")); got != "b" {
		t.Errorf("in/old/b = %q", got)
	}
}

// FIFOs, sockets and device nodes are skipped, never opened, on both sides.
func TestSpecialFilesSkipped(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root, g := guestTree(t, Guest{})
	dir := filepath.Join(root, "d")
	write(t, filepath.Join(dir, "ok"), "ok", 0o644)
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dir, "sda"), unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var sum *Summary
	var err error
	out := filepath.Join(t.TempDir(), "d")
	go func() {
		defer close(done)
		sum, err = CopyFrom(context.Background(), g, "/d", out, Options{})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("copy-from blocked on a special file")
	}
	if err != nil {
		t.Fatal(err)
	}
	if sum.Files != 1 || len(sum.Skipped) != 3 {
		t.Fatalf("summary %+v", *sum)
	}
	for _, s := range sum.Skipped {
		if !strings.HasPrefix(s.Path, "web:/d/") || !strings.Contains(s.Reason, "only regular files") {
			t.Errorf("skipped %+v", s)
		}
	}
	ents, _ := os.ReadDir(out)
	if len(ents) != 1 {
		t.Errorf("copied %d entries, want ok alone", len(ents))
	}
	// copy-to of a host tree with a device node skips it too.
	sum, err = CopyTo(context.Background(), g, dir, "/back", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Skipped) != 3 || !strings.HasPrefix(sum.Skipped[0].Path, dir) {
		t.Errorf("copy-to summary %+v", *sum)
	}
}

func TestSparseFileStreamed(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	root, g := guestTree(t, Guest{Private: true, Offset: 100000, FSUser: true})
	src := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	const size = 2 << 30
	if _, err := f.WriteAt([]byte("head"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tail"), size-4); err != nil {
		t.Fatal(err)
	}
	f.Close()
	start := time.Now()
	if _, err := CopyTo(context.Background(), g, src, "/disk.img", Options{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("2 GiB sparse file copied in %s", time.Since(start))
	st := lstat(t, filepath.Join(root, "disk.img"))
	if st.Size != size || st.Blocks*512 > 1<<20 {
		t.Errorf("copy: size %d, %d bytes allocated; want %d, sparse", st.Size, st.Blocks*512, size)
	}
	b := make([]byte, 4)
	g2, _ := os.Open(filepath.Join(root, "disk.img"))
	defer g2.Close()
	if _, err := g2.ReadAt(b, size-4); err != nil || string(b) != "tail" {
		t.Errorf("tail = %q, %v", b, err)
	}
}

func TestExistingFiles(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root, g := guestTree(t, Guest{})
	write(t, filepath.Join(root, "etc/motd"), "old", 0o644)
	src := filepath.Join(t.TempDir(), "motd")
	write(t, src, "new", 0o644)
	if _, err := CopyTo(context.Background(), g, src, "/etc/motd", Options{}); err == nil || !strings.Contains(err.Error(), "web:/etc/motd exists: use --force") {
		t.Fatalf("err = %v", err)
	}
	if _, err := CopyTo(context.Background(), g, src, "/etc/", Options{Force: true}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "etc/motd")); got != "new" {
		t.Errorf("motd = %q", got)
	}
	// A directory is never replaced by a file.
	if _, err := CopyTo(context.Background(), g, src, "/etc", Options{Force: true}); err != nil {
		t.Fatal(err) // into /etc: replaces motd again
	}
	if err := os.Mkdir(filepath.Join(root, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "dir/motd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := CopyTo(context.Background(), g, src, "/dir", Options{Force: true}); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("err = %v", err)
	}
	// Missing places are named.
	for dst, want := range map[string]string{"/nope/x": "web:/nope: no such directory in the machine", "/nope/": "web:/nope: no such directory", "etc": "must be absolute"} {
		if _, err := CopyTo(context.Background(), g, src, dst, Options{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("copy-to %s: %v, want %q", dst, err, want)
		}
	}
	if _, err := CopyFrom(context.Background(), g, "/etc/nothing", t.TempDir(), Options{}); err == nil || !strings.Contains(err.Error(), "web:/etc/nothing: no such file") {
		t.Errorf("copy-from a missing file: %v", err)
	}
	noTemps(t, root)
}

// A full disk ends the copy with its error and leaves no half file.
func TestFullDisk(t *testing.T) {
	root, g := guestTree(t, Guest{})
	small := testenv.MountFS(t, "tmpfs", "size=1m")
	write(t, filepath.Join(root, "big"), strings.Repeat("x", 4<<20), 0o644)
	_, err := CopyFrom(context.Background(), g, "/big", small, Options{})
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	if ents, _ := os.ReadDir(small); len(ents) != 0 {
		t.Errorf("left %v", ents)
	}
}

// A denied write (an immutable directory) is an error naming the file.
func TestDenied(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root, g := guestTree(t, Guest{})
	dir := filepath.Join(root, "ro")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := setImmutable(dir, true); err != nil {
		t.Skipf("chattr +i: %v", err)
	}
	t.Cleanup(func() { _ = setImmutable(dir, false) })
	src := filepath.Join(t.TempDir(), "f")
	write(t, src, "f", 0o644)
	_, err := CopyTo(context.Background(), g, src, "/ro/", Options{})
	if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "web:/ro/f") {
		t.Errorf("err = %v", err)
	}
}

func setImmutable(p string, on bool) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	attr, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	if on {
		attr |= fsImmutableFL
	} else {
		attr &^= fsImmutableFL
	}
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(attr))
}

// A kernel filesystem the guest mounted is neither read nor written.
func TestKernelFilesystems(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root, g := guestTree(t, Guest{})
	p := filepath.Join(root, "proc")
	if err := os.Mkdir(p, 0o555); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("proc", p, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(p, unix.MNT_DETACH) })
	if err := os.Symlink("/proc/sys/kernel", filepath.Join(root, "k")); err != nil {
		t.Fatal(err)
	}
	if _, err := CopyFrom(context.Background(), g, "/proc/version", t.TempDir(), Options{}); err == nil || !strings.Contains(err.Error(), "kernel filesystem") {
		t.Errorf("copy-from /proc/version: %v", err)
	}
	src := filepath.Join(t.TempDir(), "core_pattern")
	write(t, src, "|/tmp/evil", 0o644)
	if _, err := CopyTo(context.Background(), g, src, "/k/", Options{Force: true}); err == nil || !strings.Contains(err.Error(), "kernel filesystem") {
		t.Errorf("copy-to /k/: %v", err)
	}
}

// The copy's credentials stay on its own thread.
func TestThreadCredentialsDoNotLeak(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	_, g := guestTree(t, Guest{Private: true, Offset: 100000, FSUser: true})
	src := filepath.Join(t.TempDir(), "f")
	write(t, src, "f", 0o644)
	for range 20 {
		if _, err := CopyTo(context.Background(), g, src, "/f", Options{Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(t.TempDir(), "mine")
	write(t, p, "", 0o644)
	if st := lstat(t, p); st.Uid != 0 {
		t.Errorf("a file this process made after copies is owned by %d", st.Uid)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	if data[0].Effective&(1<<unix.CAP_SYS_ADMIN) == 0 {
		t.Errorf("this thread lost CAP_SYS_ADMIN")
	}
}

const fsImmutableFL = 0x10 // FS_IMMUTABLE_FL, linux/fs.h

// A file that vanishes or shrinks while the copy runs is an error naming
// it, and leaves no file under its name.
func TestVanishedAndShrunk(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root, g := guestTree(t, Guest{})
	write(t, filepath.Join(root, "d/a"), "a", 0o644)
	write(t, filepath.Join(root, "d/b"), strings.Repeat("b", 1<<20), 0o644)
	t.Cleanup(func() { testHook = nil })
	testHook = func(at, p string) {
		if at == "open" && p == "/d/a" {
			os.Remove(filepath.Join(root, "d/a"))
		}
	}
	out := t.TempDir()
	if _, err := CopyFrom(context.Background(), g, "/d", out, Options{}); err == nil || !strings.Contains(err.Error(), "web:/d/a: vanished while it was copied") {
		t.Errorf("vanished: %v", err)
	}
	testHook = func(at, p string) {
		if at == "stat" && p == "/d/b" {
			if err := os.Truncate(filepath.Join(root, "d/b"), 10); err != nil {
				t.Error(err)
			}
		}
	}
	out = t.TempDir()
	if _, err := CopyFrom(context.Background(), g, "/d/b", out, Options{}); err == nil || !strings.Contains(err.Error(), "web:/d/b: it shrank while it was copied") {
		t.Errorf("shrunk: %v", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("left %v", ents)
	}
}
