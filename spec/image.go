package spec

import (
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// imageSources are an Image's sources, as written: it has exactly one.
var imageSources = []string{"directory", "tar", "debootstrap", "registry", "ociLayout", "dockerArchive"}

var (
	suiteRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]*$`)
	packageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// platformRE is os/architecture[/variant].
	platformRE = regexp.MustCompile(`^([a-z0-9_]+)/([a-z0-9_]+)(/([a-z0-9_.]+))?$`)
	// ociRefRE is the grammar of an OCI layout's ref names (the image
	// spec's org.opencontainers.image.ref.name).
	ociRefRE = regexp.MustCompile(`^[A-Za-z0-9]+(([-._:@+]|--)[A-Za-z0-9]+)*(/[A-Za-z0-9]+(([-._:@+]|--)[A-Za-z0-9]+)*)*$`)
)

var tarExts = []string{".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tzst"}

func validateImage(d *doc, i *Image) {
	checkName(d, "name", i.Name, "image")
	var sources []string
	for _, s := range imageSources {
		if d.has(s) {
			sources = append(sources, s)
		}
	}
	switch len(sources) {
	case 0:
		d.errorf("", "an image needs a source: %s", strings.Join(imageSources, ", "))
	case 1:
	default:
		for _, s := range sources[1:] {
			d.errorf(s, "an image has exactly one source, and %s is set too", sources[0])
		}
	}
	if d.has("directory") {
		if i.Directory == "" {
			d.errorf("directory", "is empty: give the absolute path of a root filesystem tree")
		} else if checkAbs(d, "directory", i.Directory) && path.Clean(i.Directory) == "/" {
			d.errorf("directory", "the host's own root cannot be an image")
		}
	}
	if t := i.Tar; t != nil {
		validateTar(d, t)
	}
	if b := i.Debootstrap; b != nil {
		validateDebootstrap(d, b)
	}
	if r := i.Registry; r != nil {
		validateRegistry(d, r)
	}
	if o := i.OCILayout; o != nil {
		checkPath(d, "ociLayout.path", o.Path, "the layout directory")
		if o.Ref != "" && !ociRefRE.MatchString(o.Ref) {
			d.errorf("ociLayout.ref", "%q is not a ref name of an OCI layout (letters, digits, separated by one of -._:@+ or /), e.g. latest or bookworm", o.Ref)
		}
		checkPlatform(d, "ociLayout.platform", o.Platform)
	}
	if a := i.DockerArchive; a != nil {
		checkPath(d, "dockerArchive.path", a.Path, "the archive")
		if a.Ref != "" {
			if _, err := name.NewTag(a.Ref); err != nil || strings.Contains(a.Ref, "@") {
				d.errorf("dockerArchive.ref", "%q is not an image tag such as debian:bookworm (the archive's images are named by their tags)", a.Ref)
			}
		}
		checkPlatform(d, "dockerArchive.platform", a.Platform)
	}
}

func validateTar(d *doc, t *TarSource) {
	var name string
	switch {
	case t.Path != "" && t.URL != "":
		d.errorf("tar.url", "give either path or url, not both")
	case t.Path != "":
		checkAbs(d, "tar.path", t.Path)
		name = t.Path
	case t.URL != "":
		u, err := url.Parse(t.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			d.errorf("tar.url", "%q is not an http:// or https:// URL", t.URL)
		} else {
			name = u.Path
		}
	default:
		d.errorf("tar", "give the archive's path or url")
	}
	if name != "" && !slices.ContainsFunc(tarExts, func(ext string) bool { return strings.HasSuffix(name, ext) }) {
		field := "tar.path"
		if t.URL != "" {
			field = "tar.url"
		}
		d.errorf(field, "%q does not end in a known archive type (%s)", name, strings.Join(tarExts, ", "))
	}
	if t.SHA256 != "" && !sha256RE.MatchString(t.SHA256) {
		d.errorf("tar.sha256", "%q is not a SHA-256: write 64 lowercase hex digits (sha256sum FILE)", t.SHA256)
	}
}

func validateDebootstrap(d *doc, b *Debootstrap) {
	if b.Suite == "" {
		d.errorf("debootstrap.suite", "missing: name the release, e.g. bookworm")
	} else if !suiteRE.MatchString(b.Suite) {
		d.errorf("debootstrap.suite", "%q is not a suite name (e.g. bookworm, stable)", b.Suite)
	}
	if b.Mirror != "" {
		u, err := url.Parse(b.Mirror)
		if err != nil || !slices.Contains([]string{"http", "https", "file"}, u.Scheme) || (u.Scheme != "file" && u.Host == "") {
			d.errorf("debootstrap.mirror", "%q is not an http://, https:// or file:// URL", b.Mirror)
		}
	}
	seen := map[string]int{}
	for j, p := range b.Packages {
		f := fmt.Sprintf("debootstrap.packages[%d]", j)
		if !packageRE.MatchString(p) {
			d.errorf(f, "%q is not a Debian package name", p)
		} else if k, dup := seen[p]; dup {
			d.errorf(f, "%s is already listed at packages[%d]", p, k)
		}
		seen[p] = j
	}
}

func validateRegistry(d *doc, r *RegistrySource) {
	switch {
	case r.Ref == "" && d.has("registry.ref"):
		d.errorf("registry.ref", "is empty: give the image's reference, e.g. docker.io/library/debian:bookworm")
	case r.Ref == "":
		d.errorf("registry.ref", "missing: give the image's reference, e.g. docker.io/library/debian:bookworm")
	case strings.Contains(r.Ref, "://"):
		d.errorf("registry.ref", "%q: write the reference without a scheme, e.g. %s", r.Ref, r.Ref[strings.Index(r.Ref, "://")+3:])
	default:
		if _, err := name.ParseReference(r.Ref); err != nil {
			d.errorf("registry.ref", "%q is not an image reference: %s; write [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. docker.io/library/debian:bookworm", r.Ref, refProblem(r.Ref))
		}
	}
	checkPlatform(d, "registry.platform", r.Platform)
	if d.has("registry.authFile") {
		checkPath(d, "registry.authFile", r.AuthFile, "the credentials file")
	}
}

// refProblem is what go-containerregistry finds wrong with a reference that
// does not parse, without its repetition of the reference: ParseReference
// only says that it does not, NewTag and NewDigest say why.
func refProblem(ref string) string {
	var err error
	if strings.Contains(ref, "@") {
		_, err = name.NewDigest(ref)
	} else {
		_, err = name.NewTag(ref)
	}
	if err == nil {
		return "it does not parse"
	}
	return strings.TrimSuffix(err.Error(), ": "+ref)
}

// checkPath reports a path that is missing, empty or not absolute.
func checkPath(d *doc, field, p, what string) {
	if p == "" {
		d.errorf(field, "missing: give the absolute path of %s", what)
		return
	}
	checkAbs(d, field, p)
}

// The architectures of OCI platforms (Go's GOARCH names), with the variants
// each has, and the names other tools use for them.
var (
	platformArchs = map[string][]string{
		"amd64": {"v1", "v2", "v3", "v4"}, "arm64": {"v8", "v8.1", "v8.2", "v8.3", "v8.4", "v8.5", "v9"},
		"arm": {"v5", "v6", "v7", "v8"}, "386": nil, "ppc64le": nil, "ppc64": nil, "s390x": nil,
		"riscv64": nil, "mips64le": nil, "mips64": nil, "mipsle": nil, "mips": nil, "loong64": nil,
	}
	archAliases = map[string]string{"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm/v7",
		"armv7l": "arm/v7", "armv7": "arm/v7", "armel": "arm/v5", "armv6l": "arm/v6", "i386": "386", "i686": "386", "x86": "386"}
)

// checkPlatform reports a platform that is not linux/ARCH[/VARIANT] with a
// known architecture and variant.
func checkPlatform(d *doc, field, p string) {
	if p == "" {
		return
	}
	m := platformRE.FindStringSubmatch(p)
	if m == nil {
		d.errorf(field, "%q is not os/architecture[/variant], e.g. linux/arm64 or linux/arm/v7", p)
		return
	}
	os, arch, variant := m[1], m[2], m[4]
	variants, known := platformArchs[arch]
	switch {
	case os != "linux":
		d.errorf(field, "%q: berth runs Linux images only (linux/%s)", p, arch)
	case !known && archAliases[arch] != "":
		d.errorf(field, "%q: %s is not an OCI architecture name; did you mean linux/%s?", p, arch, archAliases[arch])
	case !known:
		d.errorf(field, "%q: unknown architecture %s (amd64, arm64, arm, 386, ppc64le, s390x, riscv64, …)", p, arch)
	case variant != "" && len(variants) == 0:
		d.errorf(field, "%q: %s has no variants; write linux/%s", p, arch, arch)
	case variant != "" && !slices.Contains(variants, variant):
		d.errorf(field, "%q: %s's variants are %s", p, arch, strings.Join(variants, ", "))
	}
}

// Digest is the digest a registry reference is pinned to (sha256:…), or ""
// for a reference by tag.
func (r *RegistrySource) Digest() string {
	ref, err := name.ParseReference(r.Ref)
	if err != nil {
		return ""
	}
	if dg, ok := ref.(name.Digest); ok {
		return dg.DigestStr()
	}
	return ""
}
