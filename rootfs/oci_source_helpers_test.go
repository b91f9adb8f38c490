package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testRegistry is go-containerregistry's in-process registry on 127.0.0.1.
// The tests push to it as it is, then put a wrapper in front (a token
// realm, a stall, a corrupted blob) that the pulls under test go through.
type testRegistry struct {
	srv  *httptest.Server
	host string // 127.0.0.1:PORT
	wrap atomic.Pointer[func(http.Handler) http.Handler]
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if wrap := r.wrap.Load(); wrap != nil {
			(*wrap)(reg).ServeHTTP(w, req)
			return
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	isolateAuth(t)
	return r
}

// serve puts wrap in front of the registry (nil: nothing).
func (r *testRegistry) serve(wrap func(http.Handler) http.Handler) {
	if wrap == nil {
		r.wrap.Store(nil)
		return
	}
	r.wrap.Store(&wrap)
}

// push writes img (a v1.Image or a v1.ImageIndex) as repo:tag and returns
// the whole reference and the manifest's digest.
func (r *testRegistry) push(t *testing.T, repoTag string, img any) (string, v1.Hash) {
	t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	var d v1.Hash
	switch x := img.(type) {
	case v1.Image:
		err = remote.Write(ref, x)
		if err == nil {
			d, err = x.Digest()
		}
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, x)
		if err == nil {
			d, err = x.Digest()
		}
	}
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String(), d
}

// isolateAuth keeps the host's own credentials out of a test: the default
// keychain finds no config anywhere.
func isolateAuth(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("DOCKER_CONFIG", home+"/docker")
	t.Setenv("XDG_CONFIG_HOME", home+"/config")
	t.Setenv("XDG_RUNTIME_DIR", home+"/run")
	t.Setenv("REGISTRY_AUTH_FILE", "")
}

// tarLayer is a layer of a real tar of ents, compressed as comp says.
func tarLayer(t *testing.T, comp compression.Compression, ents ...ent) v1.Layer {
	t.Helper()
	b := makeTar(t, ents...)
	opts := []tarball.LayerOption{tarball.WithCompression(comp), tarball.WithMediaType(types.OCILayer)}
	if comp == compression.ZStd {
		opts = append(opts, tarball.WithMediaType(types.OCILayerZStd))
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testConfig is the config the test images carry.
var testConfig = v1.Config{
	Entrypoint: []string{"/bin/sh", "-c"},
	Cmd:        []string{"echo hi"},
	Env:        []string{"PATH=/usr/bin:/bin", "GREETING=hi"},
	WorkingDir: "/srv",
	User:       "daemon",
	StopSignal: "SIGINT",
	Labels:     map[string]string{"org.example": "yes"},
}

// testImage is an OCI image for os/arch[/variant] of layers.
func testImage(t *testing.T, plat string, layers ...v1.Layer) v1.Image {
	t.Helper()
	p, err := v1.ParsePlatform(plat)
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant,
		Config: testConfig, RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, layers...); err != nil {
		t.Fatal(err)
	}
	return img
}

// dockerImage is a Docker schema 2 image (what docker push makes) of gzip
// layers of ents.
func dockerImage(t *testing.T, layers ...[]ent) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH, Config: testConfig, RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ents := range layers {
		b := makeTar(t, ents...)
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// threeLayers is a base tree, a layer that adds to it and one that removes
// (an OCI whiteout) and replaces: gzip, zstd and gzip again.
func threeLayers(t *testing.T) []v1.Layer {
	return []v1.Layer{
		tarLayer(t, compression.GZip, dir("etc/"), file("etc/os-release", "ID=test\n"), dir("bin/"), file("bin/sh", "#!shell\n"), symlink("bin/ash", "sh")),
		tarLayer(t, compression.ZStd, dir("srv/"), file("srv/index.html", strings.Repeat("<p>hello</p>\n", 500))),
		tarLayer(t, compression.GZip, dir("etc/"), file("etc/.wh.os-release", ""), file("etc/hostname", "box\n")),
	}
}

// readLayer reads a layer's stream to its end: its sha256 (which must be
// the diff ID), the names of its tar entries, and the blob bytes counted.
func readLayer(t *testing.T, l Layer) (names []string, counted int64, err error) {
	t.Helper()
	rc, err := l.Open(context.Background(), func(n int64) { counted += n })
	if err != nil {
		return nil, 0, err
	}
	defer rc.Close()
	h := sha256.New()
	tr := tar.NewReader(io.TeeReader(rc, h))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			// As the store does: a corrupt blob may make the tar fail
			// first; the rest of the stream tells whether it was corrupt.
			if _, derr := io.Copy(io.Discard, rc); derr != nil {
				return nil, counted, derr
			}
			return nil, counted, err
		}
		names = append(names, hdr.Name)
	}
	if _, err := io.Copy(h, rc); err != nil {
		return nil, counted, err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != l.DiffID {
		t.Errorf("layer %s: the stream hashes to %s, not its diff ID %s", l.Digest, got, l.DiffID)
	}
	return names, counted, nil
}

// checkImage checks a resolved image against the v1.Image it came from, and
// reads every layer.
func checkImage(t *testing.T, li *LayeredImage, img v1.Image, platform string) {
	t.Helper()
	if want, _ := img.Digest(); li.Digest != want.String() {
		t.Errorf("digest %s, want %s", li.Digest, want)
	}
	if li.Platform != platform {
		t.Errorf("platform %s, want %s", li.Platform, platform)
	}
	checkLayers(t, li, img, true)
}

// checkLayers checks a resolved image's layers and config against the
// v1.Image it came from, and reads every layer; the blobs' digests too when
// the source knows them.
func checkLayers(t *testing.T, li *LayeredImage, img v1.Image, digests bool) {
	t.Helper()
	ls, _ := img.Layers()
	if len(li.Layers) != len(ls) {
		t.Fatalf("%d layers, want %d", len(li.Layers), len(ls))
	}
	for i, l := range li.Layers {
		diffID, _ := ls[i].DiffID()
		digest, _ := ls[i].Digest()
		size, _ := ls[i].Size()
		if !digests {
			digest, size = diffID, l.Size
		}
		if l.DiffID != diffID.String() || l.Digest != digest.String() || l.Size != size {
			t.Errorf("layer %d: %s %s %d, want %s %s %d", i, l.DiffID, l.Digest, l.Size, diffID, digest, size)
		}
		names, counted, err := readLayer(t, l)
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		if counted != l.Size || len(names) == 0 {
			t.Errorf("layer %d: counted %d bytes of %d, entries %q", i, counted, l.Size, names)
		}
	}
	checkConfig(t, li.Config)
}

func checkConfig(t *testing.T, c ImageConfig) {
	t.Helper()
	w := testConfig
	if strings.Join(c.Entrypoint, " ") != strings.Join(w.Entrypoint, " ") || strings.Join(c.Cmd, " ") != strings.Join(w.Cmd, " ") ||
		strings.Join(c.Env, " ") != strings.Join(w.Env, " ") || c.WorkingDir != w.WorkingDir || c.User != w.User ||
		c.StopSignal != w.StopSignal || c.Labels["org.example"] != "yes" {
		t.Errorf("config %+v, want %+v", c, w)
	}
}

// wantErr fails unless err is an error whose text holds every part.
func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one with %q", parts)
	}
	t.Logf("error: %v", err)
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not say %q", err, p)
		}
	}
}

// startTLSRegistry is a registry on HTTPS, holding img as test/tls:v1, with
// a certificate berth is made to trust when trust is set.
func startTLSRegistry(t *testing.T, img v1.Image, trust bool) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	if trust {
		pool := x509.NewCertPool()
		pool.AddCert(srv.Certificate())
		old := registryRootCAs
		registryRootCAs = pool
		t.Cleanup(func() { registryRootCAs = old })
	}
	ref := strings.TrimPrefix(srv.URL, "https://") + "/test/tls:v1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithTransport(srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	return ref
}
