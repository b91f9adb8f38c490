package rootfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The layouts and archives of the real tools: skopeo (what Incus pulls
// with) and umoci (what it unpacks with), as Debian packages them
// (hack/deps.sh installs both).

func needTool(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s is not installed (apt-get install %s; hack/deps.sh installs it)", tool, tool)
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// skopeo runs skopeo copy without a signature policy (the tests' images are
// not signed).
func skopeo(t *testing.T, src, dst string, flags ...string) {
	t.Helper()
	args := append([]string{"skopeo", "--insecure-policy", "copy", "--quiet"}, flags...)
	run(t, append(args, src, dst)...)
}

// checkDiffIDs checks that a tool's copy of img has img's layers (by diff
// ID: a tool may compress them anew) and config, and reads every layer.
func checkDiffIDs(t *testing.T, li *LayeredImage, img v1.Image) {
	t.Helper()
	cfg, _ := img.ConfigFile()
	var want, got []string
	for _, d := range cfg.RootFS.DiffIDs {
		want = append(want, d.String())
	}
	for _, l := range li.Layers {
		got = append(got, l.DiffID)
		if _, n, err := readLayer(t, l); err != nil || n != l.Size {
			t.Errorf("layer %s: %d of %d bytes: %v", l.Digest, n, l.Size, err)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("diff IDs %q, want %q", got, want)
	}
	checkConfig(t, li.Config)
}

// TestSkopeo: skopeo pulls from the in-process registry into an OCI layout
// and into a docker archive, and makes a layout of a docker archive ggcr
// wrote; berth reads all three.
func TestSkopeo(t *testing.T) {
	needTool(t, "skopeo")
	reg := newTestRegistry(t)
	img := testImage(t, hostPlat, threeLayers(t)...)
	ref, _ := reg.push(t, "test/three:v1", img)

	tmp := t.TempDir()
	lay := filepath.Join(tmp, "layout")
	skopeo(t, "docker://"+ref, "oci:"+lay+":v1", "--src-tls-verify=false")
	li, err := OCILayout{Path: lay, Ref: "v1"}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkDiffIDs(t, li, img)

	// A docker archive cannot hold zstd layers: an image as docker push makes it.
	dimg := dockerImage(t, []ent{dir("etc/"), file("etc/os-release", "ID=docker\n")}, []ent{file("hello", "world\n")})
	dref, _ := reg.push(t, "test/docker:v1", dimg)
	arch := filepath.Join(tmp, "skopeo.tar")
	skopeo(t, "docker://"+dref, "docker-archive:"+arch+":test/docker:v1", "--src-tls-verify=false")
	li, err = DockerArchive{Path: arch, Ref: "test/docker:v1"}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkDiffIDs(t, li, dimg)
	for _, l := range li.Layers {
		if l.Digest != l.DiffID {
			t.Errorf("skopeo's archive holds plain tars: layer %s is named %s", l.DiffID, l.Digest)
		}
	}

	ggcr := writeArchive(t, map[string]v1.Image{"test/three:v1": img})
	lay2 := filepath.Join(tmp, "layout2")
	skopeo(t, "docker-archive:"+ggcr, "oci:"+lay2+":from-archive")
	li, err = OCILayout{Path: lay2, Ref: "from-archive"}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkDiffIDs(t, li, img)
}

// TestUmoci: a layout umoci made, of two layers inserted from directories
// and a config it set.
func TestUmoci(t *testing.T) {
	needTool(t, "umoci")
	if os.Geteuid() != 0 {
		t.Skip("umoci insert keeps owners: run as root")
	}
	tmp := t.TempDir()
	lay := filepath.Join(tmp, "layout")
	run(t, "umoci", "init", "--layout", lay)
	run(t, "umoci", "new", "--image", lay+":v1")
	for i, files := range []map[string]string{{"etc/os-release": "ID=umoci\n", "bin/sh": "#!shell\n"}, {"srv/index.html": "<p>hi</p>\n"}} {
		src := filepath.Join(tmp, "src", string(rune('a'+i)))
		for name, body := range files {
			os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755)
			os.WriteFile(filepath.Join(src, name), []byte(body), 0o644)
		}
		run(t, "umoci", "insert", "--image", lay+":v1", src, "/")
	}
	run(t, "umoci", "config", "--image", lay+":v1", "--config.entrypoint", "/bin/sh", "--config.cmd", "-c",
		"--config.env", "GREETING=hi", "--config.workingdir", "/srv", "--config.user", "daemon", "--config.label", "org.example=yes")

	li, err := OCILayout{Path: lay, Ref: "v1"}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(li.Layers) != 2 || li.Platform != hostPlat {
		t.Fatalf("%d layers, platform %s", len(li.Layers), li.Platform)
	}
	var all []string
	for _, l := range li.Layers {
		names, n, err := readLayer(t, l)
		if err != nil || n != l.Size {
			t.Fatalf("layer %s: %d of %d bytes: %v", l.Digest, n, l.Size, err)
		}
		all = append(all, names...)
	}
	if !slices.ContainsFunc(all, func(s string) bool { return strings.HasSuffix(s, "etc/os-release") }) ||
		!slices.ContainsFunc(all, func(s string) bool { return strings.HasSuffix(s, "srv/index.html") }) {
		t.Errorf("the layers' entries: %q", all)
	}
	c := li.Config
	if strings.Join(c.Entrypoint, " ") != "/bin/sh" || c.WorkingDir != "/srv" || c.User != "daemon" || c.Labels["org.example"] != "yes" ||
		!slices.Contains(c.Env, "GREETING=hi") {
		t.Errorf("config %+v", c)
	}
}
