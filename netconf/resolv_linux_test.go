package netconf

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteResolvConf(t *testing.T) {
	hostDir := t.TempDir()
	hostConf := filepath.Join(hostDir, "resolv.conf")
	resolved := filepath.Join(hostDir, "resolved.conf")
	must(t, os.WriteFile(hostConf, []byte("# host\nnameserver 127.0.0.53\noptions edns0\nsearch example.org\n"), 0o644))
	must(t, os.WriteFile(resolved, []byte("nameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch corp.example\n"), 0o644))
	hostFiles := []string{hostConf, resolved}
	netServers := []netip.Addr{mustAddr("10.88.0.1"), mustAddr("fd88::1")}

	tests := []struct {
		name    string
		setup   func(etc string)
		rc      ResolvConf
		written bool
		want    string // a line the guest's file must then hold
		same    string // or: the guest's file must still be exactly this
	}{
		{name: "missing", setup: func(string) {}, rc: ResolvConf{Servers: netServers}, written: true, want: "nameserver fd88::1"},
		{name: "host's servers, resolved stub skipped", setup: func(string) {}, rc: ResolvConf{HostFiles: hostFiles}, written: true, want: "nameserver 192.0.2.53"},
		{name: "guest's own file kept", setup: func(etc string) { write(t, etc, "nameserver 9.9.9.9\n") }, rc: ResolvConf{Servers: netServers}, same: "nameserver 9.9.9.9\n"},
		{name: "guest's own file replaced when asked", setup: func(etc string) { write(t, etc, "nameserver 9.9.9.9\n") }, rc: ResolvConf{Servers: netServers, Replace: true}, written: true, want: "nameserver 10.88.0.1"},
		{name: "berth's file rewritten", setup: func(etc string) { write(t, etc, resolvMarker+" earlier\nnameserver 1.1.1.1\n") }, rc: ResolvConf{Servers: netServers}, written: true, want: "nameserver 10.88.0.1"},
		{name: "resolved symlink kept", setup: func(etc string) { link(t, "/run/systemd/resolve/stub-resolv.conf", etc) }, rc: ResolvConf{Servers: netServers}, same: "->/run/systemd/resolve/stub-resolv.conf"},
		{name: "resolved symlink replaced by a file when asked", setup: func(etc string) { link(t, "/run/systemd/resolve/stub-resolv.conf", etc) }, rc: ResolvConf{Servers: netServers, Replace: true}, written: true, want: "nameserver 10.88.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			etc := filepath.Join(root, "etc")
			must(t, os.Mkdir(etc, 0o755))
			tt.setup(etc)
			tt.rc.Machine = "web"
			written, err := WriteResolvConf(root, tt.rc)
			if err != nil || written != tt.written {
				t.Fatalf("written %v, err %v; want written %v", written, err, tt.written)
			}
			p := filepath.Join(etc, "resolv.conf")
			if strings.HasPrefix(tt.same, "->") {
				if dst, err := os.Readlink(p); err != nil || dst != tt.same[2:] {
					t.Fatalf("symlink changed: %q, %v", dst, err)
				}
				return
			}
			fi, err := os.Lstat(p)
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
				t.Fatalf("not a 0644 regular file: %v, %v", fi, err)
			}
			b, _ := os.ReadFile(p)
			if tt.same != "" && string(b) != tt.same {
				t.Fatalf("guest file changed to:\n%s", b)
			}
			if tt.want != "" && (!strings.Contains(string(b), tt.want+"\n") || !strings.HasPrefix(string(b), resolvMarker)) {
				t.Fatalf("want %q in a file berth marks as its own, got:\n%s", tt.want, b)
			}
			if strings.Contains(string(b), "127.0.0.53") || strings.Contains(string(b), "fe80") {
				t.Fatalf("unreachable resolver given to the machine:\n%s", b)
			}
		})
	}
}

// A guest's symlinks never lead berth out of the root: not /etc/resolv.conf
// pointing at a host path, not /etc itself pointing elsewhere.
func TestWriteResolvConfStaysInRoot(t *testing.T) {
	outside := t.TempDir()
	victim := filepath.Join(outside, "resolv.conf")
	write(t, outside, "host's own\n")

	root := t.TempDir()
	must(t, os.Mkdir(filepath.Join(root, "etc"), 0o755))
	link(t, victim, filepath.Join(root, "etc")) // absolute: inside the guest it means root+victim
	rc := ResolvConf{Machine: "web", Servers: []netip.Addr{mustAddr("10.88.0.1")}, Replace: true}
	if _, err := WriteResolvConf(root, rc); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "host's own\n" {
		t.Fatalf("wrote through the guest's symlink into the host: %q", b)
	}

	root2 := t.TempDir()
	must(t, os.Symlink("../../../../../../"+outside, filepath.Join(root2, "etc")))
	if _, err := WriteResolvConf(root2, rc); err == nil {
		t.Fatal("an /etc symlink leading out of the root was followed")
	}
	if b, _ := os.ReadFile(victim); string(b) != "host's own\n" {
		t.Fatalf("wrote through the guest's /etc symlink into the host: %q", b)
	}
}

func TestWriteResolvConfNoServer(t *testing.T) {
	hostConf := filepath.Join(t.TempDir(), "resolv.conf")
	must(t, os.WriteFile(hostConf, []byte("nameserver 127.0.0.1\n"), 0o644))
	root := t.TempDir()
	must(t, os.Mkdir(filepath.Join(root, "etc"), 0o755))
	_, err := WriteResolvConf(root, ResolvConf{Machine: "web", HostFiles: []string{hostConf}})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "DNS servers in its definition") {
		t.Fatalf("want ErrNotFound that says what to do, got %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "etc", "resolv.conf")); err == nil {
		t.Fatal("a file was written anyway")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, dir, content string) {
	t.Helper()
	must(t, os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(content), 0o644))
}

func link(t *testing.T, target, dir string) {
	t.Helper()
	must(t, os.Symlink(target, filepath.Join(dir, "resolv.conf")))
}
