package machined_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/ocitest"
	"github.com/berthd/berth/machined/api"
	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestOCIApplicationImage: a machine from an application image (busybox
// with a user of its own) and no command runs the image's Entrypoint and
// Cmd, as the image's User, in its WorkingDir, with its Env under the
// definition's environment — through berthd, with private users.
func TestOCIApplicationImage(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	e := newEnv(t, "")
	reg, err := ocitest.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	l, err := ocitest.ListenInNetns("/run/netns/"+e.netns, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg.Serve(l)
	base, err := ocitest.TreeLayer(filepath.Join(t.TempDir(), "base.tar.gz"), testenv.BusyboxGuest(t), nil, compression.GZip)
	if err != nil {
		t.Fatal(err)
	}
	own, err := ocitest.Layer(compression.GZip, ocitest.Dir("etc"),
		ocitest.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/srv:/bin/sh\n"),
		ocitest.File("etc/group", "root:x:0:\napp:x:1000:\nstaff:x:50:app\n"),
		ocitest.Entry{Name: "srv/", UID: 1000, GID: 1000, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ocitest.Image(v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{`echo "$(id -u):$(id -g):$(id -G) $(pwd) $FROM_IMAGE $OVERRIDDEN" > out; exec sleep 1000`},
		Env:        []string{"PATH=/bin:/sbin", "FROM_IMAGE=image", "OVERRIDDEN=image"},
		WorkingDir: "/srv", User: "app",
	}, base, own)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := reg.Push("app:1", img)
	if err != nil {
		t.Fatal(err)
	}
	name := testenv.UniqueName("ociapp")
	e.write("images.yaml", fmt.Sprintf("apiVersion: berth/v1\nkind: Image\nname: app\nregistry: {ref: %q, insecure: true}\n",
		l.Addr().String()+"/app@"+digest.String()))
	e.write("app.yaml", fmt.Sprintf("apiVersion: berth/v1\nkind: Machine\nname: %s\nimage: app\nenvironment: {OVERRIDDEN: definition}\n", name))
	e.apply()
	e.waitState(name, api.StateRunning, 30*time.Second)
	testenv.Eventually(t, 10*time.Second, func() error {
		out, _ := e.exec(name, "cat", "/srv/out")
		if want := "1000:1000:1000 50 /srv image definition"; strings.TrimSpace(out) != want {
			ps, _ := e.exec(name, "sh", "-c", "ls -lan /srv; tr '\\0' ' ' < /proc/1/cmdline; echo; ps -o pid,user,args; cat /proc/*/environ | tr '\\0' '\\n' | grep -E 'FROM|OVERR'")
			return fmt.Errorf("the image's command wrote %q, want %q\n%s", out, want, ps)
		}
		return nil
	})
}
