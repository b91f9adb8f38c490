package rootfs

import (
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestChoosePlatform picks from an index the way docker and containerd do:
// an exact variant first, arm64 without one is v8, arm without one v7,
// attestations and other artifacts never.
func TestChoosePlatform(t *testing.T) {
	entry := func(p string, mt types.MediaType) v1.Descriptor {
		d := v1.Descriptor{MediaType: mt, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 63) + string(rune('a'+len(p)%6))}}
		if p != "" {
			pp, _ := v1.ParsePlatform(p)
			d.Platform = pp
		}
		d.Annotations = map[string]string{"p": p}
		return d
	}
	img := types.OCIManifestSchema1
	index := []v1.Descriptor{
		entry("linux/amd64/v3", img), entry("linux/amd64", img), entry("linux/arm64", img),
		entry("linux/arm/v6", img), entry("linux/arm/v7", types.DockerManifestSchema2),
		entry("unknown/unknown", img), entry("linux/riscv64", "application/vnd.example.sbom"),
	}
	cases := []struct {
		want, got string // got "" for an error
	}{
		{"linux/amd64", "linux/amd64"},
		{"linux/amd64/v3", "linux/amd64/v3"},
		{"linux/amd64/v2", ""},
		{"linux/arm64", "linux/arm64"},
		{"linux/arm64/v8", "linux/arm64"},
		{"linux/arm", "linux/arm/v7"},
		{"linux/arm/v6", "linux/arm/v6"},
		{"linux/arm/v7", "linux/arm/v7"},
		{"linux/arm/v5", ""},
		{"linux/riscv64", ""},
		{"linux/s390x", ""},
	}
	for _, c := range cases {
		w, err := parsePlatform(c.want)
		if err != nil {
			t.Fatal(err)
		}
		d, err := choosePlatform("ref", &v1.IndexManifest{Manifests: index}, w)
		switch {
		case c.got == "" && err == nil:
			t.Errorf("%s: took %s, want an error", c.want, d.Annotations["p"])
		case c.got == "" && !strings.Contains(err.Error(), "only for linux/amd64, linux/amd64/v3, linux/arm/v6, linux/arm/v7, linux/arm64"):
			t.Errorf("%s: %v", c.want, err)
		case c.got != "" && (err != nil || d.Annotations["p"] != c.got):
			t.Errorf("%s: took %s (%v), want %s", c.want, d.Annotations["p"], err, c.got)
		}
	}

	// One image that names no platform is taken; its config says.
	d, err := choosePlatform("ref", &v1.IndexManifest{Manifests: []v1.Descriptor{entry("", img)}}, wantPlatform{platform: hostPlatform(), host: true})
	if err != nil || d.Platform != nil {
		t.Errorf("an index of one image without a platform: %v", err)
	}
	_, err = choosePlatform("ref", &v1.IndexManifest{Manifests: []v1.Descriptor{entry("unknown/unknown", img)}}, wantPlatform{platform: hostPlatform(), host: true})
	wantErr(t, err, "ref: the index holds no image for any platform")
}
