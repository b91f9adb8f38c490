package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/rootfs"
)

// testRegistry is go-containerregistry's registry on 127.0.0.1, served over
// plain HTTP (so pulls from it need --insecure), holding two images that
// share their base layer: test/app:v1 (base, then a layer with a whiteout
// and an opaque directory) and test/tool:v1 (base, then a file).
type testRegistry struct {
	host       string
	app, tool  string // their references
	appDigest  v1.Hash
	appDiffIDs []string
	// broken is test/broken:v1, whose second layer's blob the registry
	// does not find (brokenBlob); its first (brokenDiffID) it serves.
	broken, brokenBlob, brokenDiffID string
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.brokenBlob != "" && strings.HasSuffix(req.URL.Path, "/blobs/"+r.brokenBlob) && req.Method == http.MethodGet {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}`, http.StatusNotFound)
			return
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	// The host's own credentials stay out: the default keychain finds none.
	home := t.TempDir()
	for k, v := range map[string]string{"HOME": home, "DOCKER_CONFIG": home + "/docker", "XDG_CONFIG_HOME": home + "/config",
		"XDG_RUNTIME_DIR": home + "/run", "REGISTRY_AUTH_FILE": ""} {
		t.Setenv(k, v)
	}
	r.host = strings.TrimPrefix(srv.URL, "http://")
	base := tarLayer(t, map[string]string{"etc/": "", "etc/os-release": "ID=test\n", "etc/gone": "gone", "srv/": "",
		"srv/old/": "", "srv/old/a": "a", "bin/": "", "bin/sh": strings.Repeat("#!shell\n", 4000)})
	change := tarLayer(t, map[string]string{"etc/": "", "etc/.wh.gone": "", "srv/": "", "srv/old/": "", "srv/old/.wh..wh..opq": "",
		"srv/old/b": "b", "etc/hostname": "app\n"})
	app := testImage(t, base, change)
	r.app, r.appDigest = r.push(t, "test/app:v1", app)
	r.tool, _ = r.push(t, "test/tool:v1", testImage(t, base, tarLayer(t, map[string]string{"usr/": "", "usr/tool": "tool"})))
	cfg, _ := app.ConfigFile()
	for _, d := range cfg.RootFS.DiffIDs {
		r.appDiffIDs = append(r.appDiffIDs, d.String())
	}
	first, second := tarLayer(t, map[string]string{"opt/": "", "opt/first": "1"}), tarLayer(t, map[string]string{"opt/second": "2"})
	r.broken, _ = r.push(t, "test/broken:v1", testImage(t, first, second))
	d, _ := first.DiffID()
	b, _ := second.Digest()
	r.brokenDiffID, r.brokenBlob = d.String(), b.String()
	return r
}

func (r *testRegistry) push(t *testing.T, repoTag string, img v1.Image) (string, v1.Hash) {
	t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, _ := img.Digest()
	return ref.String(), d
}

// tarLayer is a gzip layer of files (a name ending in / is a directory),
// in the order of their names.
func tarLayer(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, n := range names {
		hdr := &tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[n])), ModTime: mtime}
		if strings.HasSuffix(n, "/") {
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, files[n])
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testImage(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: hostArch(), RootFS: v1.RootFS{Type: "layers"},
		Config: v1.Config{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}, WorkingDir: "/srv"}})
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, layers...); err != nil {
		t.Fatal(err)
	}
	return img
}

// TestImagePull pulls two images sharing a base layer from the in-process
// registry as a person would, lists them, exports one as an OCI layout
// (skopeo reads it when installed), pulls that back and exports it again
// to the same image, writes its flattened tar, and prunes the layers left.
func TestImagePull(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	reg := newTestRegistry(t)
	st := "--state-dir=" + t.TempDir()

	code, _, errs := run(t, st, "image", "pull", reg.app)
	if code != 1 || !strings.Contains(errs, "insecure") {
		t.Errorf("pull over plain HTTP without --insecure: %d %q", code, errs)
	}
	code, out, errs := run(t, st, "-o", "table", "image", "pull", "--insecure", reg.app)
	if code != 0 || !strings.HasPrefix(out, "image app: "+reg.app+" "+reg.appDigest.String()+" [linux/"+hostArch()+"]: 2 layers, ") {
		t.Fatalf("pull: %d %q %q", code, out, errs)
	}
	// Plain lines, stderr being no terminal: a start and an end per layer.
	if n := len(regexp.MustCompile(`(?m)^layer sha256:[0-9a-f]{12}: started, .*\nlayer sha256:[0-9a-f]{12}: 100% of .* in `).FindAllString(errs, -1)); n != 2 {
		t.Errorf("pull progress: %d layers started and ended, want 2:\n%s", n, errs)
	}
	// The second image's base is stored already: said so, not downloaded.
	code, out, errs = run(t, st, "-o", "table", "image", "pull", "--insecure", "docker://"+reg.tool, "tool-1")
	if code != 0 || !strings.Contains(out, "image tool-1: ") || !strings.Contains(out, "shared with other images") ||
		!regexp.MustCompile(`(?m)^layer sha256:[0-9a-f]{12}: already stored$`).MatchString(errs) {
		t.Errorf("pull of the second image: %d %q %q", code, out, errs)
	}

	checkImageList(t, st, reg)

	// An OCI layout of it, read back, is the same image again.
	layout := filepath.Join(t.TempDir(), "layout")
	code, out, errs = run(t, st, "-o", "json", "image", "export", "app", "--format", "oci", layout)
	var exp rootfs.OCIExport
	if code != 0 || json.Unmarshal([]byte(out), &exp) != nil || exp.RefName != "app" || len(exp.Layers) != 2 {
		t.Fatalf("export --format oci: %d %q %q", code, out, errs)
	}
	if _, err := exec.LookPath("skopeo"); err == nil {
		b, err := exec.Command("skopeo", "inspect", "oci:"+layout+":app").CombinedOutput()
		if err != nil || !strings.Contains(string(b), exp.Digest) || !strings.Contains(string(b), exp.Layers[1].Digest) {
			t.Errorf("skopeo inspect oci:%s:app: %v\n%s", layout, err, b)
		}
	}
	code, out, errs = run(t, st, "-o", "json", "image", "pull", "oci:"+layout+":app", "app-again")
	var again rootfs.Image
	if code != 0 || json.Unmarshal([]byte(out), &again) != nil || again.Digest != exp.Digest || again.Ref != "oci:"+layout+":app" {
		t.Fatalf("pull of the layout: %d %q %q", code, out, errs)
	}
	for i, l := range again.Layers {
		if l.DiffID != exp.Layers[i].DiffID {
			t.Errorf("layer %d of the image pulled from the layout: %s, want the exported %s", i, l.DiffID, exp.Layers[i].DiffID)
		}
	}
	code, out, errs = run(t, st, "-o", "table", "image", "export", "app-again", "oci:"+layout+":again")
	if code != 0 || !strings.Contains(out, "as again: "+exp.Digest) {
		t.Errorf("export of the image pulled from the layout: %d %q %q, want the same digest %s", code, out, errs, exp.Digest)
	}

	// The tar export of an OCI image is its layers merged.
	flat := filepath.Join(t.TempDir(), "app.tar")
	if code, out, errs = run(t, st, "-o", "table", "image", "export", "app", flat); code != 0 {
		t.Fatalf("export to a tar: %d %q %q", code, out, errs)
	}
	b, _ := exec.Command("tar", "-tf", flat).CombinedOutput()
	if list := string(b); !strings.Contains(list, "./srv/old/b") || strings.Contains(list, "./srv/old/a") || strings.Contains(list, "gone") || strings.Contains(list, ".wh.") {
		t.Errorf("the flattened tar:\n%s", list)
	}

	checkPrune(t, st, reg)
}

func checkImageList(t *testing.T, st string, reg *testRegistry) {
	t.Helper()
	code, out, errs := run(t, st, "-o", "table", "image", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !regexp.MustCompile(`^NAME +DIGEST +SOURCE +SIZE +SHARED +LAYERS +CREATED +USED-BY$`).MatchString(lines[0]) {
		t.Fatalf("list: %d %q %q", code, out, errs)
	}
	if !regexp.MustCompile(`^app +sha256:[0-9a-f]{12} +` + regexp.QuoteMeta(reg.app) + ` +[0-9.]+ [KM]?i?B +[0-9.]+ KiB +2 +`).MatchString(lines[1]) {
		t.Errorf("list's row of app: %q", lines[1])
	}
	code, out, _ = run(t, st, "-o", "json", "image", "list")
	var imgs []rootfs.Image
	if code != 0 || json.Unmarshal([]byte(out), &imgs) != nil || len(imgs) != 2 {
		t.Fatalf("list -o json: %d %q", code, out)
	}
	app := imgs[0]
	if app.Kind != rootfs.ImageKindOCI || app.Ref != reg.app || app.Source != reg.app || app.Digest != reg.appDigest.String() ||
		len(app.Layers) != 2 || !app.Layers[0].Shared || app.Layers[1].Shared || app.Shared != app.Layers[0].Size {
		t.Errorf("list -o json: %+v", app)
	}
	for i, l := range app.Layers {
		if l.DiffID != reg.appDiffIDs[i] || !strings.HasPrefix(l.Digest, "sha256:") || l.BlobSize == 0 {
			t.Errorf("layer %d: %+v, want diff ID %s", i, l, reg.appDiffIDs[i])
		}
	}
}

// checkPrune: a pull that fails in its second layer names it and keeps the
// first, which prune removes; removing the images removes their layers.
func checkPrune(t *testing.T, st string, reg *testRegistry) {
	t.Helper()
	code, out, errs := run(t, st, "image", "pull", "--insecure", reg.broken)
	if code != 1 || !strings.Contains(errs, `image "broken"`) || !strings.Contains(errs, "layer 2 of 2 ("+reg.brokenBlob+")") {
		t.Errorf("pull of an image whose layer is missing: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, st, "-o", "table", "image", "prune")
	if code != 0 || !regexp.MustCompile(`^removed layer `+reg.brokenDiffID+`\nfreed [0-9.]+ KiB: 0 images, 1 layer\n$`).MatchString(out) {
		t.Errorf("prune after the failed pull: %d %q %q", code, out, errs)
	}
	if code, out, errs := run(t, st, "image", "remove", "app", "tool-1", "app-again"); code != 0 {
		t.Fatalf("remove: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, st, "-o", "json", "image", "prune")
	var res rootfs.PruneResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || len(res.Layers) != 0 || len(res.Digests) != 0 {
		t.Errorf("prune after removing the images (which removes their layers): %d %q %q", code, out, errs)
	}
	if ents, _ := os.ReadDir(filepath.Join(strings.TrimPrefix(st, "--state-dir="), "images/layers/sha256")); len(ents) != 0 {
		t.Errorf("%d layers left", len(ents))
	}
}

// TestImagePullThroughBerthd: with berthd running, the image goes into its
// store (as every image verb works on it), and an Image definition's build
// from the registry shows the same progress.
func TestImagePullThroughBerthd(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	reg := newTestRegistry(t)
	p := startBerthd(t)
	rd := "--runtime-dir=" + p.RuntimeDir
	if code, out, errs := run(t, rd, "-o", "table", "image", "pull", "--insecure", reg.app, "web"); code != 0 || !strings.Contains(out, "image web: ") {
		t.Fatalf("pull through berthd: %d %q %q", code, out, errs)
	}
	s, err := rootfs.Open(p.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if img, err := s.Image("web"); err != nil || img.Digest != reg.appDigest.String() {
		t.Errorf("berthd's store: %+v %v", img, err)
	}
	def := filepath.Join(t.TempDir(), "tool.yaml")
	os.WriteFile(def, []byte("apiVersion: berth/v1\nkind: Image\nname: tool\nregistry:\n  ref: "+reg.tool+"\n  insecure: true\n"), 0o644)
	code, out, errs := run(t, rd, "-o", "table", "image", "build", "-f", def)
	if code != 0 || !strings.Contains(out, "image tool: "+reg.tool) || !strings.Contains(errs, ": already stored\n") ||
		!regexp.MustCompile(`(?m)^layer sha256:[0-9a-f]{12}: 100% of `).MatchString(errs) {
		t.Errorf("build of a registry image through berthd: %d %q %q", code, out, errs)
	}
	if code, out, _ := run(t, rd, "-o", "table", "image", "list"); code != 0 || !strings.Contains(out, "web ") || !strings.Contains(out, "tool ") {
		t.Errorf("list through berthd: %q", out)
	}
}

// TestPullSource: what berth image pull makes of its REF, as skopeo's
// transports name images, and the name it defaults to.
func TestPullSource(t *testing.T) {
	cwd, _ := os.Getwd()
	for _, tc := range []struct {
		ref   string
		flags pullFlags
		src   rootfs.Source
		name  string
		err   string
	}{
		{ref: "docker.io/library/debian:bookworm", src: rootfs.Registry{Ref: "docker.io/library/debian:bookworm"}, name: "debian"},
		{ref: "docker://alpine", src: rootfs.Registry{Ref: "alpine"}, name: "alpine"},
		{ref: "registry.example.org:5000/team/My_App@sha256:" + strings.Repeat("a", 64), flags: pullFlags{platform: "linux/arm64", insecure: true},
			src: rootfs.Registry{Ref: "registry.example.org:5000/team/My_App@sha256:" + strings.Repeat("a", 64), Platform: "linux/arm64", Insecure: true}, name: "my-app"},
		{ref: "ghcr.io/x/app:1.4", flags: pullFlags{authFile: "auth.json"}, src: rootfs.Registry{Ref: "ghcr.io/x/app:1.4", AuthFile: filepath.Join(cwd, "auth.json")}, name: "app"},
		{ref: "oci:/srv/oci/Alpine.3:3.20", src: rootfs.OCILayout{Path: "/srv/oci/Alpine.3", Ref: "3.20"}, name: "alpine-3"},
		{ref: "oci:layout", flags: pullFlags{platform: "linux/arm/v7"}, src: rootfs.OCILayout{Path: filepath.Join(cwd, "layout"), Platform: "linux/arm/v7"}, name: "layout"},
		{ref: "docker-archive:/tmp/app.tar", src: rootfs.DockerArchive{Path: "/tmp/app.tar"}, name: "app"},
		{ref: "docker-archive:/tmp/x.tar:example.org/team/web:1", src: rootfs.DockerArchive{Path: "/tmp/x.tar", Ref: "example.org/team/web:1"}, name: "web"},
		{ref: "oci:/srv/oci", flags: pullFlags{insecure: true}, err: "--auth-file and --insecure are for a registry, not a local oci"},
		{ref: "docker-archive:", err: "name the archive after docker-archive:"},
		{ref: "docker://", err: "give the image's reference"},
		{ref: "example.org/___", src: rootfs.Registry{Ref: "example.org/___"}, name: ""},
	} {
		src, name, err := pullSource(tc.ref, tc.flags)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want an error saying %q", tc.ref, err, tc.err)
			}
			continue
		}
		if err != nil || src != tc.src || name != tc.name {
			t.Errorf("%s: %#v %q %v, want %#v %q", tc.ref, src, name, err, tc.src, tc.name)
		}
	}
}

func hostArch() string { return runtime.GOARCH }
