package host

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestImageDefaults: an OCI image's config fills what the definition leaves
// out, as a runtime would, and an image with an init is booted.
func TestImageDefaults(t *testing.T) {
	app := writeTree(t, map[string]string{
		"etc/passwd": "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
		"etc/group":  "root:x:0:\napp:x:1000:\nstaff:x:50:app\nwheel:x:10:root,app\n",
	})
	img := &rootfs.Image{Name: "web", Ref: "127.0.0.1:5000/web:1", Config: &rootfs.ImageConfig{
		Entrypoint: []string{"/bin/server"}, Cmd: []string{"--port", "80"}, Env: []string{"PATH=/usr/bin", "A=image"},
		WorkingDir: "/srv", User: "app", StopSignal: "SIGINT",
	}}
	m := &spec.Machine{Name: "web", Environment: map[string]string{"A": "machine"}}
	c := container.Config{Boot: true, Env: []string{"A=machine"}}
	if err := imageDefaults(&c, m, img, []string{app}); err != nil {
		t.Fatal(err)
	}
	if c.Boot || !slices.Equal(c.Args, []string{"/bin/server", "--port", "80"}) || c.WorkingDir != "/srv" {
		t.Errorf("boot %v args %q dir %q: want the image's command in /srv", c.Boot, c.Args, c.WorkingDir)
	}
	if !slices.Equal(c.Env, []string{"PATH=/usr/bin", "A=machine"}) {
		t.Errorf("env %q: want the image's with the definition's winning", c.Env)
	}
	if c.User == nil || c.User.UID != 1000 || c.User.GID != 1000 || !slices.Equal(c.User.Groups, []uint32{50, 10}) {
		t.Errorf("user %+v: want 1000:1000 with groups 50, 10", c.User)
	}
	if c.PoweroffSignal != 2 {
		t.Errorf("poweroff signal %d, want SIGINT", c.PoweroffSignal)
	}
	for spec, want := range map[string]string{"1001": "1001:0", "app:staff": "1000:50", "0:10": "0:10", "nobody": "error", "app:nogroup": "error"} {
		u, err := resolveUser([]string{app}, spec)
		got := "error"
		if err == nil {
			got = strings.Join([]string{itoa(u.UID), itoa(u.GID)}, ":")
		}
		if got != want {
			t.Errorf("User %q = %s (%v), want %s", spec, got, err, want)
		}
	}
	// An OS image boots; the definition's workingDir and command win.
	osTree := writeTree(t, map[string]string{"usr/lib/systemd/systemd": "", "etc/passwd": "root:x:0:0::/root:/bin/sh\n"})
	c = container.Config{Boot: true}
	if err := imageDefaults(&c, &spec.Machine{Name: "os"}, img, []string{osTree}); err != nil || !c.Boot || c.User != nil {
		t.Errorf("an image with systemd: boot %v user %+v, %v; want it booted", c.Boot, c.User, err)
	}
	// busybox's /sbin/init does not make an application image bootable.
	bb := writeTree(t, map[string]string{"sbin/init": "", "etc/passwd": "app:x:1000:1000::/srv:/bin/sh\n"})
	c = container.Config{Boot: true}
	if err := imageDefaults(&c, &spec.Machine{Name: "bb"}, img, []string{bb}); err != nil || c.Boot {
		t.Errorf("an application image with /sbin/init: boot %v, %v; want its command", c.Boot, err)
	}
	c = container.Config{Boot: true}
	noCmd := &rootfs.Image{Name: "bb", Config: &rootfs.ImageConfig{}}
	if err := imageDefaults(&c, &spec.Machine{Name: "bb"}, noCmd, []string{bb}); err != nil || !c.Boot {
		t.Errorf("an image with /sbin/init and no command: boot %v, %v; want it booted", c.Boot, err)
	}
	bare := &rootfs.Image{Name: "bare", Config: &rootfs.ImageConfig{}}
	if err := imageDefaults(&container.Config{Boot: true}, &spec.Machine{Name: "x"}, bare, []string{t.TempDir()}); err == nil ||
		!strings.Contains(err.Error(), "give the machine a command") {
		t.Errorf("an image with neither init nor command: %v", err)
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
