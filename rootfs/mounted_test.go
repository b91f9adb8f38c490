package rootfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/berthd/berth/internal/safecopy"
	"github.com/berthd/berth/internal/testenv"

	"golang.org/x/sys/unix"
)

// TestMountStoppedOverlay: a stopped overlay root is mounted detached (the
// image's files seen, writes landing in the upper directory), holds the root
// lock while open, and leaves no mount behind.
func TestMountStoppedOverlay(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	if _, err := s.Import(ctx, "tiny", Dir{Path: smallTree(t)}, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := s.CreateRoot(ctx, "m", "tiny", StrategyOverlay)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.MountStopped("m")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Shift != 0 {
		t.Errorf("shift %d", m.Shift)
	}
	if _, err := s.LockRoot("m"); !errors.Is(err, ErrBusy) {
		t.Errorf("LockRoot while mounted = %v, want ErrBusy", err)
	}
	if _, err := s.MountStopped("m"); !errors.Is(err, ErrBusy) {
		t.Errorf("a second MountStopped = %v, want ErrBusy", err)
	}
	how := &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT}
	fd, err := unix.Openat2(int(m.Root.Fd()), "/etc/os-release", how)
	if err != nil {
		t.Fatalf("the image's file through the mount: %v", err)
	}
	unix.Close(fd)
	src := filepath.Join(t.TempDir(), "new")
	if err := os.WriteFile(src, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := &safecopy.Guest{Name: "m", Root: int(m.Root.Fd()), Offset: m.Shift, Private: true}
	if _, err := safecopy.CopyTo(context.Background(), g, src, "/etc/", safecopy.Options{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(r.Overlay.Upper, "etc/new")); err != nil || string(b) != "new" {
		t.Errorf("upper/etc/new = %q, %v", b, err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mi, []byte(r.Path)) {
		t.Errorf("a mount of %s stayed", r.Path)
	}
	l, err := s.LockRoot("m")
	if err != nil {
		t.Fatalf("the root lock after Close: %v", err)
	}
	l.Unlock()
	if _, err := s.MountStopped("none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("MountStopped of a machine without a root = %v", err)
	}
}

// TestMountStoppedShifted: a root shifted on disk (ramfs) is opened as it
// is, its shift told, so copies store the range's IDs; one midway through a
// shift is refused.
func TestMountStoppedShifted(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	const b = 0x90000
	s := openStoreAt(t, testenv.MountFS(t, "ramfs", ""))
	if _, err := s.Import(ctx, "tiny", Dir{Path: smallTree(t)}, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := s.CreateRoot(ctx, "m", "tiny", StrategyCopy)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := s.PrepareUsers(ctx, "m", b, IdmapOptional); err != nil || !u.Shifted {
		t.Fatalf("shift: %+v, %v", u, err)
	}
	m, err := s.MountStopped("m")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Shift != b {
		t.Fatalf("shift %d, want %d", m.Shift, b)
	}
	g := &safecopy.Guest{Name: "m", Root: int(m.Root.Fd()), Offset: m.Shift, Private: true}
	src := filepath.Join(t.TempDir(), "g")
	if err := os.WriteFile(src, []byte("g"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(src, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := safecopy.CopyTo(context.Background(), g, src, "/home/u/", safecopy.Options{}); err != nil {
		t.Fatal(err)
	}
	if uid, gid, _ := owner(t, filepath.Join(r.Dir, "home/u/g")); uid != b+1000 || gid != b+1000 {
		t.Errorf("on disk %d:%d, want %d", uid, gid, b+1000)
	}
	out := t.TempDir()
	if _, err := safecopy.CopyFrom(context.Background(), g, "/usr/bin/hello", out, safecopy.Options{}); err != nil {
		t.Fatal(err)
	}
	if uid, _, _ := owner(t, filepath.Join(out, "hello")); uid != 0 {
		t.Errorf("copied out: uid %d, want the machine's root, 0", uid)
	}
	m.Close()

	to := uint32(0xA0000)
	r.Shift = &Shift{Base: b, To: &to}
	if err := writeJSON(filepath.Join(r.Path, rootMetaFile), r); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MountStopped("m"); !errors.Is(err, ErrBusy) {
		t.Errorf("MountStopped midway through a shift = %v, want ErrBusy", err)
	}
}
