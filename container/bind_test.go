package container_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/testenv"
)

// TestBind binds host directories and files into a running busybox machine,
// in a user namespace of its own (the default) and with the host's users:
// owners show unchanged inside (idmapped), writes land on the host, a
// read-only bind refuses writes and, with private users, the guest's root
// can neither remount it writable nor unmount a mount below it to see what
// it covers; a symlink the guest planted at the target never leads outside
// the machine's root, nor does a guest that covered /run/host get anything
// but an error; --mkdir makes the target as the machine's root; the
// errors name what is wrong; the bind is private (the host's mounts below
// the source neither follow it in later nor are unmounted by it); an earlier supervisor's leftover propagation
// directory is cleaned at start, and nothing stays mounted on the host once
// the machine has stopped.
func TestBind(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	t.Run("private users", func(t *testing.T) { testBind(t, true) })
	t.Run("host users", func(t *testing.T) { testBind(t, false) })
}

func testBind(t *testing.T, private bool) {
	cfg := newConfig(t, "bind")
	cfg.Boot = true
	overlayRoot(t, &cfg, testenv.BusyboxGuest(t))
	if private {
		cfg.Users = testUsers(t)
	}
	share := t.TempDir()
	noErr(t, os.WriteFile(filepath.Join(share, "owned"), []byte("x"), 0o644))
	noErr(t, os.Chown(filepath.Join(share, "owned"), 1000, 1000))
	noErr(t, os.WriteFile(filepath.Join(share, "file.txt"), []byte("file-content\n"), 0o644))
	// A mount below the source covers a secret: the guest must not get to
	// see under it.
	covered := filepath.Join(share, "covered")
	noErr(t, os.Mkdir(covered, 0o755))
	noErr(t, os.WriteFile(filepath.Join(covered, "secret"), nil, 0o644))
	noErr(t, unix.Mount("tmpfs", covered, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { _ = unix.Unmount(covered, unix.MNT_DETACH) })
	noErr(t, os.WriteFile(filepath.Join(covered, "cover"), nil, 0o644))
	noErr(t, os.Mkdir(filepath.Join(share, "later"), 0o755))
	// Outside the machine: a directory a guest symlink names.
	outside := t.TempDir()

	// What a supervisor killed before it could clean up leaves behind.
	prop := rundir.Propagate(cfg.Name)
	noErr(t, os.MkdirAll(filepath.Join(prop, "bind-stale"), 0o700))
	noErr(t, unix.Mount(prop, prop, "", unix.MS_BIND, ""))
	t.Cleanup(func() { container.RemovePropagation(cfg.Name) })

	m := start(t, cfg)
	m.WaitPhase(t, container.PhaseRunning, 1)
	if _, err := os.Stat(filepath.Join(prop, "bind-stale")); err == nil {
		t.Errorf("the stale %s/bind-stale is still there", prop)
	}
	c, err := container.Dial(cfg.RuntimeDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bind := func(o container.BindOptions) (container.BindResult, error) {
		t0 := time.Now()
		r, err := c.Bind(ctx, o)
		t.Logf("bind %s on %s (ro %v, mkdir %v): %v in %v", o.Source, o.Target, o.ReadOnly, o.Mkdir, err, time.Since(t0))
		return r, err
	}
	incoming, _ := m.sh(t, `mkdir /run/host/incoming/x 2>/dev/null && echo INCOMING-WRITABLE; ls /run/host/incoming >/dev/null 2>&1 || echo incoming-closed`)
	if strings.Contains(incoming, "INCOMING-WRITABLE") || private != strings.Contains(incoming, "incoming-closed") {
		t.Errorf("the guest's /run/host/incoming: %q", incoming)
	}
	if out, code := m.sh(t, `test -d /run/host/incoming && ln -s ../../../../../../..`+outside+` /tmp/escape && mkdir -p /srv/landing && ln -s /srv/landing /tmp/tolink && touch /tmp/afile && echo ok`); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("the guest's setup: %d %s", code, out)
	}

	r, err := bind(container.BindOptions{Source: share, Target: "/mnt/rw", Mkdir: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.Idmapped != private || r.Target != "/mnt/rw" || r.Machine != cfg.Name {
		t.Errorf("result %+v", r)
	}
	if _, err := bind(container.BindOptions{Source: share, Target: "/mnt/ro", Mkdir: true, ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := bind(container.BindOptions{Source: filepath.Join(share, "file.txt"), Target: "/etc/bound.txt", Mkdir: true}); err != nil {
		t.Fatal(err)
	}
	// Through the guest's symlink to its own /srv/landing: the bind lands
	// there.
	if _, err := bind(container.BindOptions{Source: share, Target: "/tmp/tolink"}); err != nil {
		t.Fatal(err)
	}
	// A host mount made below the source later stays the host's: the bind
	// is private (as a definition's binds are).
	later := filepath.Join(share, "later")
	noErr(t, unix.Mount("tmpfs", later, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { _ = unix.Unmount(later, unix.MNT_DETACH) })
	noErr(t, os.WriteFile(filepath.Join(later, "late"), nil, 0o644))
	script := strings.Join([]string{
		`test -e /mnt/rw/later/late && echo LATE-PROPAGATED || echo late-private`,
		`echo "owner=$(stat -c %u:%g /mnt/rw/owned) mnt=$(stat -c %u /mnt)"`,
		`touch /mnt/rw/made-inside && echo rw-write-ok`,
		`touch /mnt/ro/nope 2>&1 | grep -q "Read-only file system" && echo ro-erofs`,
		`mount -o remount,rw /mnt/ro 2>/dev/null; mount -o remount,bind,rw /mnt/ro 2>/dev/null; touch /mnt/ro/nope 2>/dev/null && echo ro-WRITABLE || echo ro-still-read-only`,
		`umount /mnt/ro/covered 2>/dev/null; umount -l /mnt/ro/covered 2>/dev/null; test -e /mnt/ro/covered/secret && echo SECRET-SEEN || echo cover-kept`,
		`cat /etc/bound.txt`,
		`test -e /srv/landing/owned && echo tolink-in-guest-srv`,
		`umount /etc/bound.txt && echo file-unmounted`,
	}, "; ")
	out, _ := m.sh(t, script)
	t.Logf("guest:\n%s", out)
	want := []string{"late-private", "owner=1000:1000", "rw-write-ok", "ro-erofs", "file-content", "tolink-in-guest-srv", "file-unmounted"}
	if private {
		// The guest's root is not the host's: the read-only bind and the
		// mount below it are locked.
		want = append(want, "ro-still-read-only", "cover-kept", "mnt=0")
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("the guest did not say %q", w)
		}
	}
	if fi, err := os.Stat(filepath.Join(share, "made-inside")); err != nil {
		t.Error(err)
	} else if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
		t.Errorf("a file the guest's root made in the bind is owned by %d on the host, want 0", uid)
	}
	if private {
		// --mkdir made /mnt as the machine's root: owned 0 on disk (the
		// overlay's upper directory, idmapped).
		if fi, err := os.Stat(filepath.Join(cfg.Root.Overlay.Upper, "mnt")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("the upper layer's /mnt: %v", err)
		}
	}

	for _, tc := range []struct {
		what string
		o    container.BindOptions
		want string
	}{
		{"missing source", container.BindOptions{Source: "/no/such", Target: "/mnt/x", Mkdir: true}, "the source /no/such does not exist"},
		{"missing target", container.BindOptions{Source: share, Target: "/mnt/missing"}, "/mnt/missing does not exist in the machine (--mkdir makes it)"},
		{"directory on a file", container.BindOptions{Source: share, Target: "/tmp/afile"}, "cannot bind a directory on a file"},
		{"relative source", container.BindOptions{Source: "share", Target: "/mnt/x"}, "absolute"},
		{"on /", container.BindOptions{Source: share, Target: "/"}, "not /"},
		// The guest's symlink names a host directory: resolved inside the
		// root, it names nothing.
		{"symlink out", container.BindOptions{Source: share, Target: "/tmp/escape"}, "does not exist in the machine"},
		{"symlink out, mkdir", container.BindOptions{Source: share, Target: "/tmp/escape", Mkdir: true}, "a symlink to a missing path"},
		{"symlink out, below", container.BindOptions{Source: share, Target: "/tmp/escape/x", Mkdir: true}, "a symlink to a missing path"},
	} {
		_, err := bind(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), cfg.Name) {
			t.Errorf("%s: error %v, want one naming the machine and saying %q", tc.what, err, tc.want)
		}
	}
	// The host's own mount below the source is still there: the unmount of
	// the bind's copy in the propagation directory did not reach it (it
	// would, through a peer group, had the clone not been made private).
	if mi, _ := os.ReadFile(hostMountinfo); !strings.Contains(string(mi), " "+covered+" ") {
		t.Errorf("the host's mount on %s is gone after the binds", covered)
	}
	if ents, _ := os.ReadDir(outside); len(ents) > 0 {
		t.Errorf("the host directory the guest's symlink names got %v", ents)
	}
	if ents, _ := os.ReadDir(prop); len(ents) > 0 {
		t.Errorf("%s keeps %v after the binds", prop, ents)
	}
	mi, _ := os.ReadFile(hostMountinfo)
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (f[4] == outside || f[4] == "/srv/landing" || strings.HasPrefix(f[4], prop+"/")) {
			t.Errorf("a bind landed on the host: %s", l)
		}
	}

	// A guest that covers /run/host gets no bind, and never has its own
	// mount moved for the one it hid.
	if out, code := m.sh(t, `mount -t tmpfs none /run/host && echo covered`); code != 0 {
		t.Fatalf("cover /run/host: %d %s", code, out)
	}
	if _, err := bind(container.BindOptions{Source: share, Target: "/mnt/rw"}); err == nil || !strings.Contains(err.Error(), "did not arrive") {
		t.Errorf("a bind into a machine that covered /run/host: %v", err)
	}
	if ents, _ := os.ReadDir(prop); len(ents) > 0 {
		t.Errorf("%s keeps %v after a failed bind", prop, ents)
	}

	noErr(t, c.Poweroff(ctx))
	if _, err := m.Wait(t); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(prop); err == nil {
		t.Errorf("%s is still there after the machine stopped", prop)
	}
	mi, _ = os.ReadFile(hostMountinfo)
	if strings.Contains(string(mi), prop) {
		t.Errorf("mounts left on the host:\n%s", grepLines(string(mi), prop))
	}
	if l := leaks(t, cfg); len(l) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
	}
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// hostMountinfo is the host's mount table, as its PID 1 sees it: this
// process's own main thread may be a supervisor's, in a machine's mount
// namespace M0 (a goroutine locked to a thread runs each machine, and the
// runtime may give it the main thread), and /proc/self shows the main
// thread's.
const hostMountinfo = "/proc/1/mountinfo"
