package rootfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The OCI image sources: an image in a registry, in an OCI image layout
// directory, or in a `docker save` archive. Each is a Layered source: the store
// resolves it (Resolve reads the manifest and the config only) and unpacks
// the layers it does not have yet (Layer.Open). The formats and the registry
// protocol are go-containerregistry's; this file holds what the three share:
// the platform, the media types berth accepts and the LayeredImage they make.

// Registry is an image in an OCI distribution registry (Docker Hub, ghcr.io,
// quay.io, a registry of one's own): what `skopeo copy docker://REF` reads.
type Registry struct {
	// Ref is [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST]; without a
	// registry it is Docker Hub's (debian:bookworm is
	// docker.io/library/debian:bookworm), without a tag or digest :latest.
	Ref string
	// Platform is os/architecture[/variant]; "" is the host's.
	Platform string
	// AuthFile is a credentials file (containers-auth.json, or a docker
	// config.json) asked before the usual places: ~/.docker/config.json,
	// $DOCKER_CONFIG, $REGISTRY_AUTH_FILE and containers/auth.json.
	AuthFile string
	// Insecure allows plain HTTP, and HTTPS with a certificate that is not
	// verified. Without it berth talks to registries over verified HTTPS
	// only, even on the loopback and private networks.
	Insecure bool
}

// OCILayout is an image in an OCI image layout directory: what `skopeo copy
// … oci:DIR[:REF]`, `umoci` and `buildah push … oci:DIR` write.
type OCILayout struct {
	Path string
	// Ref picks the image whose org.opencontainers.image.ref.name annotation
	// it is; "" takes the layout's only image.
	Ref string
	// Platform is os/architecture[/variant]; "" is the host's.
	Platform string
}

// DockerArchive is an image in a `docker save` archive (or `podman save`,
// `skopeo copy … docker-archive:FILE`).
type DockerArchive struct {
	Path string
	// Ref picks the image by one of its tags (debian:bookworm); "" takes
	// the archive's only image.
	Ref string
	// Platform is the os/architecture[/variant] the image must be for; ""
	// is the host's.
	Platform string
}

var (
	_ Layered = Registry{}
	_ Layered = OCILayout{}
	_ Layered = DockerArchive{}
)

func (r Registry) String() string      { return withPlatform(r.Ref, r.Platform) }
func (o OCILayout) String() string     { return withPlatform(o.ref(), o.Platform) }
func (a DockerArchive) String() string { return withPlatform(a.ref(), a.Platform) }

func withPlatform(ref, platform string) string {
	if platform == "" {
		return ref
	}
	return ref + " [" + platform + "]"
}

// ref is the layout as skopeo names it: oci:DIR[:REF].
func (o OCILayout) ref() string {
	if o.Ref == "" {
		return "oci:" + o.Path
	}
	return "oci:" + o.Path + ":" + o.Ref
}

// ref is the archive as skopeo names it: docker-archive:FILE[:REF].
func (a DockerArchive) ref() string {
	if a.Ref == "" {
		return "docker-archive:" + a.Path
	}
	return "docker-archive:" + a.Path + ":" + a.Ref
}

// errLayered is what build says: a layered source has no tree of its own to
// fill a directory with; Store.Import unpacks its layers instead.
func errLayered(s Source) error {
	return errorf(ErrUnsupported, "%s is a layered image: the store imports it layer by layer (Resolve, then each layer's Open), not as one tree", s)
}

func (r Registry) build(context.Context, string, *reporter) error      { return errLayered(r) }
func (o OCILayout) build(context.Context, string, *reporter) error     { return errLayered(o) }
func (a DockerArchive) build(context.Context, string, *reporter) error { return errLayered(a) }

func (r Registry) check() error {
	if _, err := r.reference(); err != nil {
		return err
	}
	if _, err := parsePlatform(r.Platform); err != nil {
		return err
	}
	if r.AuthFile != "" {
		if err := checkFile(r.AuthFile, "auth file"); err != nil {
			return err
		}
	}
	return nil
}

func (o OCILayout) check() error {
	if !filepath.IsAbs(o.Path) {
		return errorf(ErrInvalid, "OCI layout %q is not an absolute path", o.Path)
	}
	if _, err := os.Stat(filepath.Join(o.Path, "index.json")); err != nil {
		return errorf(ErrInvalid, "%s is not an OCI image layout (no index.json): %w", o.Path, err)
	}
	_, err := parsePlatform(o.Platform)
	return err
}

func (a DockerArchive) check() error {
	if !filepath.IsAbs(a.Path) {
		return errorf(ErrInvalid, "docker archive %q is not an absolute path", a.Path)
	}
	if err := checkFile(a.Path, "docker archive"); err != nil {
		return err
	}
	if a.Ref != "" {
		if _, err := name.NewTag(a.Ref); err != nil {
			return errorf(ErrInvalid, "%s: %q is not an image tag such as debian:bookworm: %v", a.ref(), a.Ref, err)
		}
	}
	_, err := parsePlatform(a.Platform)
	return err
}

func checkFile(p, what string) error {
	if !filepath.IsAbs(p) {
		return errorf(ErrInvalid, "%s %q is not an absolute path", what, p)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return errorf(ErrInvalid, "%s: %w", what, err)
	}
	if fi.IsDir() {
		return errorf(ErrInvalid, "%s %s is a directory", what, p)
	}
	return nil
}

// reference parses Ref as docker and podman do.
func (r Registry) reference() (name.Reference, error) {
	var opts []name.Option
	if r.Insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(r.Ref, opts...)
	if err != nil {
		return nil, errorf(ErrInvalid, "%q is not an image reference ([REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. docker.io/library/debian:bookworm): %v", r.Ref, err)
	}
	return ref, nil
}

// The media types berth takes. Schema 1 manifests (docker before 1.10) and
// artifacts that are not container images (Helm charts, signatures, SBOMs)
// are refused with their type named; so are foreign (Windows) and
// non-distributable layers, whose blobs live outside the image.
var (
	layerTypes = []types.MediaType{types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer,
		types.DockerLayer, types.DockerUncompressedLayer}
	configTypes = []types.MediaType{types.OCIConfigJSON, types.DockerConfigJSON}
)

// unsupportedManifest says why a manifest of media type mt is not an image
// berth can take.
func unsupportedManifest(ref string, mt types.MediaType) error {
	if mt.IsSchema1() {
		return errorf(ErrUnsupported, "%s: manifest of media type %s (Docker image manifest schema 1, from docker before 1.10) is not supported: push the image again with a current docker, podman or skopeo", ref, mt)
	}
	return errorf(ErrUnsupported, "%s: manifest of media type %q is not supported: berth takes OCI and Docker schema 2 image manifests and indexes", ref, mt)
}

// describe turns an image's manifest and config into a LayeredImage whose
// layers open with blob. want is the platform asked for; digest, when set,
// is what the manifest must hash to (the index or the pinned ref said so).
func describe(ref string, img v1.Image, digest v1.Hash, want wantPlatform, blob func(v1.Hash) blobOpener) (*LayeredImage, error) {
	mt, err := img.MediaType()
	if err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", ref, err)
	}
	if !mt.IsImage() {
		return nil, unsupportedManifest(ref, mt)
	}
	raw, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", ref, err)
	}
	got := sha256Hash(raw)
	if digest.Hex != "" && got != digest {
		return nil, errorf(ErrInvalid, "%s: manifest digest mismatch: it is %s, not the %s it is named by: the image is corrupt", ref, got, digest)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, errorf(ErrInvalid, "%s: manifest %s: %w", ref, got, err)
	}
	if !slices.Contains(configTypes, m.Config.MediaType) {
		return nil, errorf(ErrUnsupported, "%s: not a container image: its config is of media type %q (an artifact such as a Helm chart, a signature or an SBOM?)", ref, m.Config.MediaType)
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("%s: config %s: %w", ref, m.Config.Digest, err)
	}
	if h := sha256Hash(rawCfg); h != m.Config.Digest {
		return nil, errorf(ErrInvalid, "%s: config digest mismatch: it is %s, not the %s the manifest names: the image is corrupt", ref, h, m.Config.Digest)
	}
	li, diffIDs, err := fromConfig(ref, rawCfg, want, len(m.Layers))
	if err != nil {
		return nil, err
	}
	li.Digest = got.String()
	for i, d := range m.Layers {
		what := ociLayerName(i, len(m.Layers), d.Digest.String())
		if !slices.Contains(layerTypes, d.MediaType) {
			return nil, errorf(ErrUnsupported, "%s: %s: media type %q is not a tar layer berth can unpack (it takes %s)", ref, what, d.MediaType, joinTypes(layerTypes))
		}
		b := &layerBlob{ref: ref, what: what, digest: d.Digest, size: d.Size, open: blob(d.Digest)}
		li.Layers = append(li.Layers, Layer{DiffID: diffIDs[i].String(), Digest: d.Digest.String(), Size: d.Size, Open: b.Open})
	}
	return li, nil
}

// fromConfig reads an image config: the LayeredImage with its config and
// platform, and the layers' diff IDs (n of them, as the manifest lists).
func fromConfig(ref string, raw []byte, want wantPlatform, n int) (*LayeredImage, []v1.Hash, error) {
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, errorf(ErrInvalid, "%s: config: %w", ref, err)
	}
	if t := cfg.RootFS.Type; t != "" && t != "layers" {
		return nil, nil, errorf(ErrUnsupported, "%s: config: rootfs type %q is not supported (only layers)", ref, t)
	}
	if len(cfg.RootFS.DiffIDs) != n {
		return nil, nil, errorf(ErrInvalid, "%s: the manifest lists %d layers but the config %d diff IDs: the image is corrupt", ref, n, len(cfg.RootFS.DiffIDs))
	}
	have := platform{os: cfg.OS, arch: cfg.Architecture, variant: cfg.Variant}
	// A config that names no variant does not say which it is for (an
	// index's entry often does, and was matched already).
	check := have
	if check.variant == "" {
		check.variant = want.variant
	}
	if have.arch != "" && !want.matches(check) {
		return nil, nil, errorf(ErrInvalid, "%s: the image is for %s, not %s: name its platform to use it anyway", ref, have, want.describe())
	}
	if have.arch == "" {
		have = want.platform
	}
	c := cfg.Config
	return &LayeredImage{
		Ref:      ref,
		Platform: have.String(),
		Config: ImageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir,
			User: c.User, StopSignal: c.StopSignal, Labels: c.Labels},
	}, cfg.RootFS.DiffIDs, nil
}

// ociLayerName names a layer in messages: layer 2/3 sha256:….
func ociLayerName(i, n int, digest string) string {
	return fmt.Sprintf("layer %d/%d %s", i+1, n, digest)
}

func joinTypes(ts []types.MediaType) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

func sha256Hash(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}
