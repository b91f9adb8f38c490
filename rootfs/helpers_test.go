package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// ent is one entry of a crafted archive.
type ent struct {
	name, link string
	typ        byte
	body       string
	mode       int64
	uid, gid   int
	xattrs     map[string]string
	major      int64
	minor      int64
	mtime      time.Time
}

func file(name, body string) ent { return ent{name: name, typ: tar.TypeReg, body: body, mode: 0o644} }
func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(name, target string) ent { return ent{name: name, typ: tar.TypeLink, link: target} }

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

// makeTar writes the entries as an uncompressed PAX tar.
func makeTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		mt := e.mtime
		if mt.IsZero() {
			mt = testTime
		}
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			Size: int64(len(e.body)), ModTime: mt, Format: tar.FormatPAX, Devmajor: e.major, Devminor: e.minor}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t testing.TB, p string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func openStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// debianTar returns a .tar.zst of the cached Debian 12 guest made with GNU tar
// (numeric owners, xattrs, nanosecond times), cached beside the guest.
func debianTar(t testing.TB) (tree, archive string) {
	t.Helper()
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	testenv.RequireCommand(t, "tar", "zstd")
	tree = testenv.DebianGuest(t)
	archive, err := testenv.Cached("debian12-rootfs.tar.zst", func(tmp string) error {
		cmd := exec.Command("sh", "-c", `tar --format=posix --numeric-owner --xattrs --xattrs-include='*' -C "$1" -c . | zstd -q -T0 -3 -o "$2" -f`, "sh", tree, tmp)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("make debian tarball: %v\n%s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree, archive
}

// inOverlay runs a shell script with the root's overlay mounted at $R in a
// private mount namespace (so nothing stays mounted on the host, as with the
// supervisor), and returns its output.
func inOverlay(t testing.TB, r *Root, script string) string {
	t.Helper()
	mnt := t.TempDir()
	full := `set -e; mount -t overlay overlay -o "$1" "$2"; R="$2"; ` + script
	out, err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", full, "sh", r.Overlay.MountData(), mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("in overlay of %s: %v\n%s", r.Machine, err, out)
	}
	return string(out)
}

var execCommand = exec.Command

// DebianTarForTest gives the external test package (boot_test.go) the cached
// Debian tarball.
var DebianTarForTest = debianTar
