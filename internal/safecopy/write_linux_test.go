package safecopy

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/berthd/berth/internal/testenv"
)

// TestWriteFile: a provisioned file lands with its owner and mode, its missing
// parents made; the image's symbolic links (to a host directory, up and out
// with .., or the file's own name linked to a host file) never lead the write
// to the host.
func TestWriteFile(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := context.Background()
	root, g := guestTree(t, Guest{Private: true, Offset: 0})
	host := t.TempDir()
	write(t, filepath.Join(host, "secret"), "host secret", 0o600)
	rel, err := filepath.Rel(root, host)
	if err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"abs": host, "up": "../../../../../../" + rel, "etc/motd": filepath.Join(host, "secret")} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}

	if err := WriteFile(ctx, g, "/home/user/.ssh/authorized_keys", []byte("ssh-ed25519 AAAA"), 1000, 1001, 0o600); err != nil {
		t.Fatal(err)
	}
	st := lstat(t, filepath.Join(root, "home/user/.ssh/authorized_keys"))
	if st.Uid != 1000 || st.Gid != 1001 || st.Mode&0o7777 != 0o600 {
		t.Errorf("authorized_keys: %d:%d %o, want 1000:1001 600", st.Uid, st.Gid, st.Mode&0o7777)
	}
	if d := lstat(t, filepath.Join(root, "home/user/.ssh")); d.Mode&0o777 != 0o755 || d.Uid != 0 {
		t.Errorf("made parent: %d %o, want root's 755", d.Uid, d.Mode&0o777)
	}

	// /abs leads to ROOT/HOST once that exists in the machine.
	if err := os.MkdirAll(filepath.Join(root, host), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/abs/secret", "/up/secret", "/../../../../" + rel + "/secret", "/etc/motd"} {
		// Each lands inside the root or is refused (/up names /002 there).
		if err := WriteFile(ctx, g, p, []byte("overwritten"), 0, 0, 0o644); err != nil && p == "/abs/secret" {
			t.Errorf("%s: %v", p, err)
		}
		if got := read(t, filepath.Join(host, "secret")); got != "host secret" {
			t.Fatalf("writing %s in the machine changed the host's file: %q", p, got)
		}
	}
	// Through the links, inside the root: /abs resolves to ROOT/HOST.
	if got := read(t, filepath.Join(root, host, "secret")); got != "overwritten" {
		t.Errorf("/abs/secret inside the root: %q", got)
	}
	// The link at the name itself is replaced, not followed.
	if st := lstat(t, filepath.Join(root, "etc/motd")); st.Mode&0o170000 != 0o100000 {
		t.Errorf("/etc/motd is %o, want a regular file in place of the link", st.Mode)
	}
	if err := WriteFile(ctx, g, "/home", []byte("x"), 0, 0, 0o644); err == nil {
		t.Error("a directory was replaced by a file")
	}
	noTemps(t, root)
}
