package machined_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/ocitest"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/rootfs"
	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ociEnv is a berthd (env) and an in-process registry it pulls from: one
// listener in the test's network namespace, where the images are pushed,
// and one in berthd's, which the definitions name.
type ociEnv struct {
	*env
	reg      *ocitest.Registry
	pullHost string       // 127.0.0.1:PORT in berthd's network namespace
	pullSrv  *http.Server // that listener's server, which the test can stop
	layers   map[string]v1.Layer
	digests  map[string]v1.Hash // by tag
}

// newOCIEnv starts berthd and the registry and pushes the test's images of
// the Debian systemd guest, all three in the repository debian:
//
//	debian:base  its /usr, the rest, and a small layer that deletes
//	             /etc/motd (a whiteout) and replaces /etc/apt/apt.conf.d
//	             (an opaque directory holding one new file)
//	debian:app   the same three layers and one more
//	debian:big   /usr, the rest and 8 MiB that no other image has
func newOCIEnv(t *testing.T) *ociEnv {
	// berthd asks the usual credential files; the host's own stay out.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	t.Setenv("REGISTRY_AUTH_FILE", "")
	e := newEnv(t, "")
	guest := testenv.DebianGuest(t)
	o := &ociEnv{env: e, layers: map[string]v1.Layer{}, digests: map[string]v1.Hash{}}
	var err error
	if o.reg, err = ocitest.NewRegistry(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.reg.Close)
	l, err := ocitest.ListenInNetns("/run/netns/"+e.netns, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen in berthd's network namespace: %v", err)
	}
	o.pullHost, o.pullSrv = l.Addr().String(), o.reg.Serve(l)

	start := time.Now()
	usr, rest, err := ocitest.SplitTree(t.TempDir(), guest, compression.ZStd)
	if err != nil {
		t.Fatal(err)
	}
	o.layers["usr"], o.layers["rest"] = usr, rest
	o.layers["top"] = smallLayer(t, ocitest.Dir("etc"), ocitest.Whiteout("etc", "motd"),
		ocitest.Dir("etc/apt/apt.conf.d"), ocitest.Opaque("etc/apt/apt.conf.d"),
		ocitest.File("etc/apt/apt.conf.d/99berth", "// from the image's third layer\n"))
	o.layers["app"] = smallLayer(t, ocitest.Dir("srv"), ocitest.File("srv/app", "the app image's own layer\n"))
	noise := make([]byte, 8<<20)
	_, _ = rand.NewChaCha8([32]byte{'b', 'e', 'r', 't', 'h'}).Read(noise)
	o.layers["big"] = smallLayer(t, ocitest.Dir("srv"), ocitest.File("srv/big", string(noise)))
	for tag, ls := range map[string][]string{"base": {"usr", "rest", "top"}, "app": {"usr", "rest", "top", "app"}, "big": {"usr", "rest", "big"}} {
		var layers []v1.Layer
		for _, n := range ls {
			layers = append(layers, o.layers[n])
		}
		img, err := ocitest.Image(v1.Config{Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}, layers...)
		if err != nil {
			t.Fatal(err)
		}
		if o.digests[tag], err = o.reg.Push("debian:"+tag, img); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("the Debian guest as layers in the registry: %v", time.Since(start).Round(time.Millisecond))
	return o
}

func smallLayer(t *testing.T, ents ...ocitest.Entry) v1.Layer {
	t.Helper()
	l, err := ocitest.Layer(compression.ZStd, ents...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ref is the digest-pinned reference of debian:tag as berthd reaches it.
func (o *ociEnv) ref(tag string) string {
	return o.pullHost + "/debian@" + o.digests[tag].String()
}

// imageDoc is an Image definition of debian:tag, pinned, over plain HTTP.
func (o *ociEnv) imageDoc(name, tag string) string {
	return fmt.Sprintf("apiVersion: berth/v1\nkind: Image\nname: %s\nregistry: {ref: %q, insecure: true}\n", name, o.ref(tag))
}

// debMachine is a machine booting image with private users (the default).
func debMachine(name, image string) string {
	return fmt.Sprintf("apiVersion: berth/v1\nkind: Machine\nname: %s\nimage: %s\nresources: {memoryMax: 256M, pidsMax: 400}\n", name, image)
}

func (o *ociEnv) diffID(layer string) string {
	o.t.Helper()
	h, err := o.layers[layer].DiffID()
	if err != nil {
		o.t.Fatal(err)
	}
	return h.String()
}

func (o *ociEnv) digest(layer string) string {
	o.t.Helper()
	h, err := o.layers[layer].Digest()
	if err != nil {
		o.t.Fatal(err)
	}
	return h.String()
}

// store opens berthd's image store, as berth image does beside berthd.
func (o *ociEnv) store() *rootfs.Store {
	o.t.Helper()
	s, err := rootfs.Open(o.paths.StateDir)
	if err != nil {
		o.t.Fatal(err)
	}
	return s
}

// storedLayers are the layer store's entries, by diff ID.
func (o *ociEnv) storedLayers() []string {
	o.t.Helper()
	ents, err := os.ReadDir(filepath.Join(o.paths.StateDir, "images", "layers", "sha256"))
	if err != nil {
		o.t.Fatal(err)
	}
	var ids []string
	for _, d := range ents {
		ids = append(ids, "sha256:"+d.Name())
	}
	return ids
}

// systemRunning checks that systemd in the machine is up with no failed unit.
func (o *ociEnv) systemRunning(name string) {
	o.t.Helper()
	out, code := o.exec(name, "sh", "-c", "systemctl is-system-running --wait; systemctl --failed --no-legend --plain")
	if code != 0 || strings.TrimSpace(out) != "running" {
		o.t.Fatalf("%s: systemctl is-system-running: exit %d:\n%s", name, code, out)
	}
}

// TestOCIImages: the Debian systemd guest, pushed to a registry as three
// layers, is pulled by berthd and booted with private users; the whiteout
// and the opaque directory of its top layer show inside; a second image on
// the same layers stores none of them again; a second root of the image
// takes no copy; a registry that stops in the middle of a third image's
// layer fails that image's build with the image and the layer named, and
// leaves the running machines and the store as they were.
func TestOCIImages(t *testing.T) {
	o := newOCIEnv(t)
	first, second := testenv.UniqueName("oci"), testenv.UniqueName("oci")
	o.write("images.yaml", o.imageDoc("debian", "base"))
	o.write("first.yaml", debMachine(first, "debian"))

	o.run("an image from the registry boots", func(t *testing.T) {
		start := time.Now()
		o.apply()
		pulled := time.Since(start)
		s := o.waitState(first, api.StateRunning, 60*time.Second)
		o.systemRunning(first)
		t.Logf("apply (pull, unpack, root, start): %v; running after %v", pulled.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		if s.ImageDigest != o.digests["base"].String() || s.ImageRef != o.ref("base") {
			t.Errorf("status: image %s %s, want %s %s", s.ImageRef, s.ImageDigest, o.ref("base"), o.digests["base"])
		}
		if s.RootStrategy != string(rootfs.StrategyOverlay) || s.Users == nil || s.Users.Root != "idmapped" {
			t.Errorf("root %s, users %+v: want an idmapped overlay of the layers", s.RootStrategy, s.Users)
		}
		if out, code := o.exec(first, "test", "!", "-e", "/etc/motd"); code != 0 {
			t.Errorf("/etc/motd, whited out in the top layer, is there: %s", out)
		}
		if out, _ := o.exec(first, "ls", "-A", "/etc/apt/apt.conf.d"); out != "99berth\n" {
			t.Errorf("/etc/apt/apt.conf.d, opaque in the top layer, holds %q, want only 99berth", out)
		}
		if out, _ := o.exec(first, "stat", "-c", "%u:%g %a", "/usr/bin/passwd", "/etc/shadow"); out != "0:0 4755\n0:42 640\n" {
			t.Errorf("owners and modes inside: %q, want root's setuid passwd and shadow's group on /etc/shadow", out)
		}
	})

	o.run("a second image stores only the layer it adds", func(t *testing.T) {
		o.write("app.yaml", o.imageDoc("debian-app", "app"))
		o.apply()
		o.checkShared(t)
	})

	o.run("a second root of the image is made in no time", func(t *testing.T) {
		before := o.storedLayers()
		o.write("second.yaml", debMachine(second, "debian"))
		start := time.Now()
		o.apply()
		applied := time.Since(start)
		o.waitState(second, api.StateRunning, 60*time.Second)
		running := time.Since(start)
		o.systemRunning(second)
		// The root itself, timed where berthd makes it: the store.
		s, probe := o.store(), testenv.UniqueName("probe")
		start = time.Now()
		if _, err := s.CreateRoot(t.Context(), probe, "debian", rootfs.StrategyAuto); err != nil {
			t.Fatal(err)
		}
		made := time.Since(start)
		if _, err := s.RemoveRoot(probe, true); err != nil {
			t.Fatal(err)
		}
		t.Logf("second machine: apply %v (root and start), running after %v; a root alone: %v",
			applied.Round(time.Millisecond), running.Round(time.Millisecond), made.Round(time.Microsecond))
		if after := o.storedLayers(); len(after) != len(before) {
			t.Errorf("layers %v after the second machine, were %v", after, before)
		}
		if made > time.Second {
			t.Errorf("a second root of the image took %v", made)
		}
	})

	o.run("a registry that stops mid-pull fails that image only", func(t *testing.T) {
		o.stopRegistryMidPull(t, []string{first, second})
	})
}

// checkShared checks the store after debian-app's pull: its first three
// layers are debian's, stored once and marked shared, as berth image list
// -o json shows them; the layer store holds four layers, its disk usage
// about one image's.
func (o *ociEnv) checkShared(t *testing.T) {
	imgs, err := o.store().Images()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]rootfs.Image{}
	for _, img := range imgs {
		byName[img.Name] = img
	}
	base, app := byName["debian"], byName["debian-app"]
	for _, img := range []rootfs.Image{base, app} {
		// berth image list -o json, less the paths.
		for i := range img.Layers {
			img.Layers[i].Path = ""
		}
		b, _ := json.Marshal(img)
		t.Logf("berth image list -o json: %s", b)
	}
	want := []string{o.diffID("usr"), o.diffID("rest"), o.diffID("top"), o.diffID("app")}
	if len(app.Layers) != 4 || len(base.Layers) != 3 {
		t.Fatalf("layers: debian %d, debian-app %d; want 3 and 4", len(base.Layers), len(app.Layers))
	}
	var shared int64
	for i, l := range app.Layers {
		if l.DiffID != want[i] || l.Shared != (i < 3) {
			t.Errorf("debian-app layer %d: %s shared %v, want %s shared %v", i, l.DiffID, l.Shared, want[i], i < 3)
		}
		if i < 3 {
			if b := base.Layers[i]; b.Path != l.Path || !b.Shared {
				t.Errorf("layer %d: debian's at %s (shared %v), debian-app's at %s", i, b.Path, b.Shared, l.Path)
			}
			shared += l.Size
		}
	}
	if app.Shared != shared || base.Shared != shared {
		t.Errorf("shared: debian %d, debian-app %d; want %d", base.Shared, app.Shared, shared)
	}
	if got := o.storedLayers(); len(got) != 4 {
		t.Errorf("layers stored: %v, want 4 (the base's three once)", got)
	}
	du := duBytes(t, filepath.Join(o.paths.StateDir, "images", "layers"))
	t.Logf("layer store: %d MiB on disk for debian (%d MiB) and debian-app (%d MiB, %d MiB of it shared)",
		du>>20, base.Size>>20, app.Size>>20, shared>>20)
	if du > base.Size+base.Size/4 {
		t.Errorf("the layer store uses %d bytes for two images of %d and %d: the base is not stored once", du, base.Size, app.Size)
	}
}

// stopRegistryMidPull serves half of debian:big's own layer, then stops
// berthd's listener: the build fails naming the image and the layer, the
// machines keep running, and nothing of the layer is left in the store.
func (o *ociEnv) stopRegistryMidPull(t *testing.T, machines []string) {
	leaders := map[string]int{}
	for _, m := range machines {
		leaders[m] = o.status(m).LeaderPID
	}
	blob := o.digest("big")
	o.reg.Wrap(o.stopInBlob(blob))
	o.write("big.yaml", o.imageDoc("debian-big", "big"))
	seq := o.lastEvent()
	start := time.Now()
	res, err := o.api.Apply(t.Context(), api.ApplyRequest{Path: filepath.Join(o.dir, "defs")})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	var msg string
	for _, r := range res.Results {
		if r.Action.Kind == api.KindImage && r.Action.Name == "debian-big" {
			msg = r.Error
		} else if r.Error != "" {
			t.Errorf("apply: %s: %s", r.Action, r.Error)
		}
	}
	t.Logf("apply with the registry gone mid-pull, after %v: %s", time.Since(start).Round(time.Millisecond), msg)
	// berthd tries again at its next pass, the registry gone by then; the
	// machines keep running meanwhile.
	testenv.Eventually(t, 30*time.Second, func() error {
		passes := map[string]string{}
		for _, ev := range o.events("", seq) {
			if ev.Kind == api.EvReconcileError && ev.Image == "debian-big" {
				passes[ev.Reconcile] = ev.Message
			}
		}
		if len(passes) < 2 {
			return fmt.Errorf("no pass after the apply tried debian-big again: %v", passes)
		}
		for _, m := range passes {
			if !strings.Contains(m, blob) {
				t.Logf("a later pass: %s", m)
			}
		}
		return nil
	})
	for _, want := range []string{".yaml:1: ", `image "debian-big"`, "layer 3 of 3", blob} {
		if !strings.Contains(msg, want) {
			t.Errorf("the build's error does not name %s: %q", want, msg)
		}
	}
	for _, m := range machines {
		if s := o.status(m); s.State != api.StateRunning || s.LeaderPID != leaders[m] {
			t.Errorf("%s was disturbed: %s, leader %d (was %d)", m, s.State, s.LeaderPID, leaders[m])
		}
	}
	o.systemRunning(machines[0])
	for _, id := range o.storedLayers() {
		if id == o.diffID("big") {
			t.Errorf("the layer cut short is in the store")
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(o.paths.StateDir, "images", ".tmp")); len(ents) != 0 {
		t.Errorf("work directories left in the image store: %v", ents)
	}
	if _, err := o.store().Image("debian-big"); err == nil {
		t.Errorf("debian-big is in the store")
	}
}

// stopInBlob serves half of the blob, then closes berthd's listener and
// every connection to it, as a registry that goes down would.
func (o *ociEnv) stopInBlob(blob string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+blob) {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			b := rec.Body.Bytes()
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			_, _ = w.Write(b[:len(b)/2])
			w.(http.Flusher).Flush()
			go o.pullSrv.Close()
			panic(http.ErrAbortHandler)
		})
	}
}

// duBytes is du's disk usage of the tree at p, hard links counted once.
func duBytes(t *testing.T, p string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-s", "-B1", p).Output()
	if err != nil {
		t.Fatalf("du %s: %v", p, err)
	}
	n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
