package host

import (
	"reflect"
	"testing"

	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
)

// TestImageSource maps each kind of Image source, as written, to the image
// store's source.
func TestImageSource(t *testing.T) {
	cases := []struct {
		src  string
		want rootfs.Source
	}{
		{"directory: /srv/tree", rootfs.Dir{Path: "/srv/tree"}},
		{"tar: {path: /srv/r.tar.zst}", rootfs.Tar{Location: "/srv/r.tar.zst"}},
		{"tar: {url: 'https://example.org/r.tar.xz', sha256: " + sha + "}", rootfs.Tar{Location: "https://example.org/r.tar.xz", SHA256: sha}},
		{"debootstrap: {suite: bookworm, packages: [systemd]}", rootfs.Debootstrap{Suite: "bookworm", Mirror: spec.DefaultMirror, Variant: spec.DefaultVariant, Packages: []string{"systemd"}}},
		{"registry: {ref: 'docker.io/library/debian@sha256:" + sha + "'}", rootfs.Registry{Ref: "docker.io/library/debian@sha256:" + sha}},
		{"registry: {ref: 'registry.example.org:5000/app:1', platform: linux/arm64, authFile: /etc/berth/auth.json, insecure: true}",
			rootfs.Registry{Ref: "registry.example.org:5000/app:1", Platform: "linux/arm64", AuthFile: "/etc/berth/auth.json", Insecure: true}},
		{"ociLayout: {path: /srv/oci, ref: bookworm, platform: linux/amd64}", rootfs.OCILayout{Path: "/srv/oci", Ref: "bookworm", Platform: "linux/amd64"}},
		{"dockerArchive: {path: /srv/app.tar, ref: 'app:1.4'}", rootfs.DockerArchive{Path: "/srv/app.tar", Ref: "app:1.4"}},
	}
	for _, c := range cases {
		set, err := spec.Parse("image.yaml", []byte("apiVersion: berth/v1\nkind: Image\nname: img\n"+c.src+"\n"))
		if err != nil {
			t.Errorf("%s: %v", c.src, err)
			continue
		}
		got, err := ImageSource(set.Images[0])
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %#v, %v; want %#v", c.src, got, err, c.want)
		}
	}
}

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
