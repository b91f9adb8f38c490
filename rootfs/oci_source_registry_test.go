package rootfs

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

var hostPlat = runtime.GOOS + "/" + runtime.GOARCH

// TestRegistryResolve pulls a three-layer image of real tar layers (gzip
// and zstd, with a whiteout) by tag: the manifest's digest, the platform,
// the config, and each layer's stream, which hashes to its diff ID.
func TestRegistryResolve(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, hostPlat, threeLayers(t)...)
	ref, digest := reg.push(t, "test/three:v1", img)

	li, err := Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if li.Ref != ref || li.Digest != digest.String() {
		t.Errorf("ref %s digest %s, want %s %s", li.Ref, li.Digest, ref, digest)
	}
	checkImage(t, li, img, hostPlat)
	names, _, _ := readLayer(t, li.Layers[2])
	if strings.Join(names, " ") != "etc/ etc/.wh.os-release etc/hostname" {
		t.Errorf("top layer's entries: %q", names)
	}
}

// TestRegistryDockerSchema2 pulls an image as docker push makes it.
func TestRegistryDockerSchema2(t *testing.T) {
	reg := newTestRegistry(t)
	img := dockerImage(t, []ent{dir("etc/"), file("etc/os-release", "ID=docker\n")}, []ent{file("hello", "world\n")})
	ref, _ := reg.push(t, "test/docker:v1", img)
	li, err := Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, li, img, hostPlat)
}

// TestRegistryDigestPinned pulls by digest; a digest the registry does not
// have is not found.
func TestRegistryDigestPinned(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, hostPlat, threeLayers(t)[:1]...)
	_, digest := reg.push(t, "test/pinned:v1", img)
	ref := reg.host + "/test/pinned@" + digest.String()
	li, err := Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, li, img, hostPlat)

	other := reg.host + "/test/pinned@sha256:" + strings.Repeat("0", 64)
	_, err = Registry{Ref: other, Insecure: true}.Resolve(context.Background())
	wantErr(t, err, other, "no such image")
}

// TestRegistryIndex resolves an index of linux/amd64 and linux/arm64: the
// host's is taken, another when asked, and a platform the index does not
// have is an error that lists those it has.
func TestRegistryIndex(t *testing.T) {
	reg := newTestRegistry(t)
	amd := testImage(t, "linux/amd64", tarLayer(t, compression.GZip, file("amd64", "x")))
	arm := testImage(t, "linux/arm64", tarLayer(t, compression.GZip, file("arm64", "y")))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
	)
	ref, idxDigest := reg.push(t, "test/multi:v1", idx)

	if hostPlat == "linux/amd64" || hostPlat == "linux/arm64" {
		li, err := Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]v1.Image{"linux/amd64": amd, "linux/arm64": arm}[hostPlat]
		checkImage(t, li, want, hostPlat)
	}
	li, err := Registry{Ref: ref, Platform: "linux/arm64", Insecure: true}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, li, arm, "linux/arm64/v8")

	// Pinned by the index's digest: the manifest taken is the platform's.
	pinned := reg.host + "/test/multi@" + idxDigest.String()
	li, err = Registry{Ref: pinned, Platform: "linux/amd64", Insecure: true}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, li, amd, "linux/amd64")

	_, err = Registry{Ref: ref, Platform: "linux/riscv64", Insecure: true}.Resolve(context.Background())
	wantErr(t, err, ref, "no image for linux/riscv64", "only for linux/amd64, linux/arm64/v8")
	_, err = Registry{Ref: ref, Platform: "linux/arm/v7", Insecure: true}.Resolve(context.Background())
	wantErr(t, err, "no image for linux/arm/v7")
	// The index says v8; the image's config names no variant.
	li, err = Registry{Ref: ref, Platform: "linux/arm64/v8", Insecure: true}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, li, arm, "linux/arm64/v8")
	_, err = Registry{Ref: ref, Platform: "linux/arm64/v9", Insecure: true}.Resolve(context.Background())
	wantErr(t, err, "no image for linux/arm64/v9")
}

// TestRegistryPlatformOfImage: a single image for another platform than the
// one wanted is refused, unless its platform is named.
func TestRegistryPlatformOfImage(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, "linux/s390x", tarLayer(t, compression.GZip, file("a", "b")))
	ref, _ := reg.push(t, "test/s390x:v1", img)
	_, err := Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
	wantErr(t, err, ref, "the image is for linux/s390x, not "+hostPlat+" (this host's)")
	li, err := Registry{Ref: ref, Platform: "linux/s390x", Insecure: true}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, li, img, "linux/s390x")
}

// TestRegistryRefSyntax: references that do not parse are refused before
// any request, naming the reference.
func TestRegistryRefSyntax(t *testing.T) {
	for _, ref := range []string{"", "Not A Ref", "UPPER/case:1", "x@sha256:1234", "host:port:tag:x"} {
		r := Registry{Ref: ref}
		wantErr(t, r.check(), "is not an image reference")
		_, err := r.Resolve(context.Background())
		wantErr(t, err, "is not an image reference")
	}
	for _, p := range []string{"amd64", "linux", "linux/amd64/v1/x", "Linux/AMD64", "windows/amd64"} {
		wantErr(t, Registry{Ref: "debian", Platform: p}.check(), "platform")
	}
	wantErr(t, Registry{Ref: "debian", AuthFile: "auth.json"}.check(), "not an absolute path")
	wantErr(t, Registry{Ref: "debian", AuthFile: "/nonexistent/auth.json"}.check(), "auth file", "no such file")
	if err := (Registry{Ref: "docker.io/library/debian:bookworm", Platform: "linux/arm/v7"}).check(); err != nil {
		t.Error(err)
	}
}

// TestRegistryMediaTypes: a schema 1 manifest, an artifact that is not an
// image and a layer that is not a tar are refused, naming what they are.
func TestRegistryMediaTypes(t *testing.T) {
	reg := newTestRegistry(t)
	rnd, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	schema1 := mutate.MediaType(rnd, "application/vnd.docker.distribution.manifest.v1+prettyjws")
	ref, _ := reg.push(t, "test/schema1:v1", schema1)
	_, err = Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
	wantErr(t, err, ref, "schema 1", "not supported")

	helm := mutate.ConfigMediaType(testImage(t, hostPlat), "application/vnd.cncf.helm.config.v1+json")
	ref, _ = reg.push(t, "test/helm:v1", helm)
	_, err = Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
	wantErr(t, err, ref, "not a container image", "application/vnd.cncf.helm.config.v1+json")

	odd := testImage(t, hostPlat, tarLayer(t, compression.GZip, file("a", "b")), oddLayer(t))
	ref, _ = reg.push(t, "test/odd:v1", odd)
	_, err = Registry{Ref: ref, Insecure: true}.Resolve(context.Background())
	wantErr(t, err, ref, "layer 2/2 sha256:", `media type "application/vnd.example.data" is not a tar layer`)
}

// TestRegistryHTTPS: plain HTTP, or a certificate berth cannot verify, only
// when the registry is marked insecure; a registry with a certificate berth
// trusts needs nothing.
func TestRegistryHTTPS(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, hostPlat, tarLayer(t, compression.GZip, file("a", "b")))
	ref, _ := reg.push(t, "test/http:v1", img)
	_, err := Registry{Ref: ref}.Resolve(context.Background())
	wantErr(t, err, ref, "server gave HTTP response to HTTPS client", "plain HTTP only with a registry marked insecure")

	t.Run("trusted", func(t *testing.T) {
		tlsRef := startTLSRegistry(t, img, true)
		li, err := Registry{Ref: tlsRef}.Resolve(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, li, img, hostPlat)
	})
	t.Run("unknown certificate", func(t *testing.T) {
		selfRef := startTLSRegistry(t, img, false)
		_, err = Registry{Ref: selfRef}.Resolve(context.Background())
		wantErr(t, err, selfRef, "certificate")
		li, err := Registry{Ref: selfRef, Insecure: true}.Resolve(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, li, img, hostPlat)
	})
}
