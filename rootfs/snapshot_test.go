package rootfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// tarNames reads an archive's entries: name → contents (for files) or "".
func tarNames(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		out[strings.TrimPrefix(hdr.Name, "./")] = string(body)
	}
}

// TestSnapshotOverlay: on an overlay root of a 1 GiB image, a snapshot is the
// machine's changes only (about the 10 MiB it wrote) and quick; a restore
// brings the files back as they were and keeps the root's record; the
// snapshot keeps the image content when the image and the root are gone, and
// restores as a new root; a clone works from it while the machine runs; a
// locked (running) root is refused.
func TestSnapshotOverlay(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	ctx := ctxT(t)
	s := openStore(t)
	tree := smallTree(t)
	if out, err := exec.Command("fallocate", "-l", "1G", filepath.Join(tree, "usr/lib/big")).CombinedOutput(); err != nil {
		t.Fatalf("fallocate: %v\n%s", err, out)
	}
	img, err := s.Import(ctx, "big", Dir{Path: tree}, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.CreateRoot(ctx, "m", "big", StrategyOverlay)
	if err != nil {
		t.Fatal(err)
	}
	// The machine's changes, made through its overlay as it would: 10 MiB
	// written, a file changed, one of the image's deleted (a whiteout).
	inOverlay(t, r, `dd if=/dev/urandom of=$R/home/u/ten bs=1M count=10 status=none; echo before > $R/etc/hostname; rm $R/usr/bin/hello2`)

	sn, err := s.CreateSnapshot(ctx, "m", "s1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot of a %d MiB image with 10 MiB changed: %d KiB in %v", img.Size>>20, sn.Size>>10, sn.Took.Round(time.Microsecond))
	if sn.Size < 10<<20 || sn.Size > 12<<20 {
		t.Errorf("snapshot size %d, want about the 10 MiB changed", sn.Size)
	}
	if sn.Took > 5*time.Second {
		t.Errorf("snapshot took %v", sn.Took)
	}
	if sn.Digest != img.Digest || sn.Strategy != StrategyOverlay {
		t.Errorf("snapshot = %+v", sn)
	}
	if _, err := s.CreateSnapshot(ctx, "m", "s1"); !errors.Is(err, ErrExists) {
		t.Errorf("second s1 = %v, want ErrExists", err)
	}
	if _, err := s.CreateSnapshot(ctx, "m", "Bad_Name"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad name = %v, want ErrInvalid", err)
	}
	if _, err := s.CreateSnapshot(ctx, "nope", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("snapshot of no root = %v, want ErrNotFound", err)
	}

	// Running (its root lock held): refused, by name.
	lock, err := s.LockRoot("m")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSnapshot(ctx, "m", "s2"); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "stop it before you snapshot it") {
		t.Errorf("snapshot of a running machine = %v, want ErrBusy", err)
	}
	if _, err := s.RestoreSnapshot(ctx, "m", "s1"); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "stop it before you restore a snapshot") {
		t.Errorf("restore onto a running machine = %v, want ErrBusy", err)
	}
	// A clone from a snapshot does not need its machine stopped.
	c, err := s.CloneSnapshot(ctx, "m", "s1", "c")
	if err != nil {
		t.Fatal(err)
	}
	if c.ClonedFrom != "m" || !strings.Contains(inOverlay(t, c, `cat $R/etc/hostname; ls $R/usr/bin`), "before") {
		t.Errorf("clone = %+v", c)
	}
	lock.Unlock()

	inOverlay(t, r, `echo after > $R/etc/hostname; rm $R/home/u/ten; echo new > $R/etc/new; echo back > $R/usr/bin/hello2`)
	before, _ := s.Root("m")
	if _, err := s.RestoreSnapshot(ctx, "m", "s1"); err != nil {
		t.Fatal(err)
	}
	out := inOverlay(t, r, `cat $R/etc/hostname; ls $R/etc $R/usr/bin; stat -c %s $R/home/u/ten`)
	if !strings.Contains(out, "before") || strings.Contains(out, "new") || strings.Contains(out, "hello2") || !strings.Contains(out, "10485760") {
		t.Errorf("restored root:\n%s", out)
	}
	after, _ := s.Root("m")
	if !after.Created.Equal(before.Created) || after.Digest != before.Digest {
		t.Errorf("restore changed the root's record: %+v → %+v", before, after)
	}
	if list, err := s.Snapshots("m"); err != nil || len(list) != 1 || list[0].Name != "s1" {
		t.Errorf("Snapshots(m) = %+v, %v", list, err)
	}
	if got, _ := s.Image("big"); strings.Join(got.UsedBy, ",") != "c,m,m@s1" {
		t.Errorf("UsedBy = %v, want the roots and the snapshot", got.UsedBy)
	}

	// The image and the roots go: the snapshot keeps the image content.
	for _, m := range []string{"m", "c"} {
		if _, err := s.RemoveRoot(m, true); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RemoveImage("big"); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Prune(); err != nil || len(res.Digests) != 0 {
		t.Errorf("Prune with a snapshot = %+v, %v: want nothing removed", res, err)
	}
	r, err = s.RestoreSnapshot(ctx, "m", "s1")
	if err != nil {
		t.Fatal(err)
	}
	if out := inOverlay(t, r, `cat $R/etc/hostname; stat -c %s $R/usr/lib/big`); !strings.Contains(out, "before") || !strings.Contains(out, "1073741824") {
		t.Errorf("root restored from the snapshot alone:\n%s", out)
	}
	if _, err := s.RemoveRoot("m", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveSnapshot("m", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveSnapshot("m", "s1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove = %v, want ErrNotFound", err)
	}
	if res, err := s.Prune(); err != nil || len(res.Digests) != 1 {
		t.Errorf("Prune without the snapshot = %+v, %v: want the image content removed", res, err)
	}
	assertClean(t, s)
}

// TestSnapshotLayers: the layers an overlay snapshot of an OCI image sits on
// stay through the removal of its image and root and a prune, and go once
// the snapshot is removed; its export is the merged tree.
func TestSnapshotLayers(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	src := newStack("snap/a", baseLayer(t), changeLayer(t))
	if _, err := s.Import(ctx, "a", src, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := s.CreateRoot(ctx, "m", "a", StrategyOverlay)
	if err != nil {
		t.Fatal(err)
	}
	inOverlay(t, r, `echo mine > $R/etc/mine`)
	if _, err := s.CreateSnapshot(ctx, "m", ""); err != nil {
		t.Fatal(err)
	}
	list, err := s.Snapshots("")
	if err != nil || len(list) != 1 || len(list[0].Layers) != 2 {
		t.Fatalf("Snapshots = %+v, %v", list, err)
	}
	if _, err := s.RemoveRoot("m", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveImage("a"); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Prune(); err != nil || len(res.Layers) != 0 {
		t.Errorf("Prune with a snapshot = %+v, %v: want no layer removed", res, err)
	}
	// Export: the merged tree, the snapshot's changes over the layers.
	var buf bytes.Buffer
	if err := s.ExportSnapshot(ctx, "m", list[0].Name, &buf, CompressNone); err != nil {
		t.Fatal(err)
	}
	names := tarNames(t, buf.Bytes())
	if names["etc/mine"] != "mine\n" || names["etc/changed"] != "v2" || names["etc/keep"] != "keep" {
		t.Errorf("export lacks the snapshot's or the layers' files: %v", names)
	}
	if _, ok := names["etc/gone"]; ok {
		t.Error("export has a file a layer whited out")
	}
	c, err := s.CloneSnapshot(ctx, "m", list[0].Name, "c")
	if err != nil {
		t.Fatal(err)
	}
	inOverlay(t, c, `test "$(cat $R/etc/mine)" = mine; test "$(cat $R/etc/changed)" = v2; test ! -e $R/etc/gone`)
	if _, err := s.RemoveRoot("c", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveSnapshot("m", list[0].Name); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Prune(); err != nil || len(res.Layers) != 2 {
		t.Errorf("Prune without the snapshot = %+v, %v: want its 2 layers removed", res, err)
	}
	if got := storedLayers(t, s); len(got) != 0 {
		t.Errorf("layers left: %v", got)
	}
}

// TestSnapshotOtherFilesystems: on btrfs a snapshot of a btrfs root is a
// subvolume snapshot (taken in constant time), and restores and clones by
// snapshots too; on xfs with reflinks a reflink root's snapshot is a copy of
// file clones. Each is independent of the root.
func TestSnapshotOtherFilesystems(t *testing.T) {
	for _, tc := range []struct {
		fstype string
		mkfs   []string
		want   Strategy
	}{
		{"btrfs", []string{"-q"}, StrategyBtrfs},
		{"xfs", []string{"-q", "-m", "reflink=1"}, StrategyReflink},
	} {
		t.Run(tc.fstype, func(t *testing.T) {
			mnt := loopFS(t, tc.fstype, tc.mkfs...)
			ctx := ctxT(t)
			s := openStoreAt(t, filepath.Join(mnt, "state"))
			if _, err := s.Import(ctx, "tiny", Dir{Path: smallTree(t)}, ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			r, err := s.CreateRoot(ctx, "m", "tiny", StrategyAuto)
			if err != nil || r.Strategy != tc.want {
				t.Fatalf("root = %+v, %v", r, err)
			}
			writeFile(t, filepath.Join(r.Dir, "etc/hostname"), []byte("before"))
			sn, err := s.CreateSnapshot(ctx, "m", "s1")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s snapshot in %v", tc.want, sn.Took.Round(time.Microsecond))
			if tc.want == StrategyBtrfs && !isSubvolume(filepath.Join(sn.Path, "rootfs")) {
				t.Error("the snapshot of a btrfs root is not a subvolume")
			}
			writeFile(t, filepath.Join(r.Dir, "etc/hostname"), []byte("after"))
			if b, _ := os.ReadFile(filepath.Join(sn.Path, "rootfs/etc/hostname")); string(b) != "before" {
				t.Errorf("the snapshot changed with the root: %q", b)
			}
			if _, err := s.RestoreSnapshot(ctx, "m", "s1"); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(r.Dir, "etc/hostname")); string(b) != "before" {
				t.Errorf("restored root: hostname %q", b)
			}
			if tc.want == StrategyBtrfs && !isSubvolume(r.Dir) {
				t.Error("the restored btrfs root is not a subvolume")
			}
			c, err := s.CloneSnapshot(ctx, "m", "s1", "c")
			if err != nil || c.Strategy != tc.want || (tc.want == StrategyBtrfs && !isSubvolume(c.Dir)) {
				t.Fatalf("clone = %+v, %v", c, err)
			}
			for _, m := range []string{"m", "c"} {
				if _, err := s.RemoveRoot(m, true); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.RemoveSnapshot("m", "s1"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.RemoveImage("tiny"); err != nil {
				t.Fatal(err)
			}
			assertClean(t, s)
		})
	}
}
