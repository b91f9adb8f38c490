package rootfs

import (
	"bufio"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// platform is an OCI platform: os/architecture[/variant], with GOOS and
// GOARCH names (linux/amd64, linux/arm64, linux/arm/v7).
type platform struct{ os, arch, variant string }

func (p platform) String() string {
	s := p.os + "/" + p.arch
	if p.variant != "" {
		s += "/" + p.variant
	}
	return s
}

// wantPlatform is the platform a source asks for: the one its definition
// names, or the host's.
type wantPlatform struct {
	platform
	host bool
}

func (w wantPlatform) describe() string {
	if w.host {
		return w.String() + " (this host's)"
	}
	return w.String()
}

var platformRE = regexp.MustCompile(`^([a-z0-9_]+)/([a-z0-9_]+)(/([a-z0-9_.]+))?$`)

// parsePlatform reads os/architecture[/variant]; "" is the host's platform.
func parsePlatform(s string) (wantPlatform, error) {
	if s == "" {
		return wantPlatform{platform: hostPlatform(), host: true}, nil
	}
	m := platformRE.FindStringSubmatch(s)
	if m == nil {
		return wantPlatform{}, errorf(ErrInvalid, "platform %q is not os/architecture[/variant], e.g. linux/arm64 or linux/arm/v7", s)
	}
	if m[1] != "linux" {
		return wantPlatform{}, errorf(ErrInvalid, "platform %q: berth runs Linux images only", s)
	}
	return wantPlatform{platform: platform{os: m[1], arch: m[2], variant: m[4]}}, nil
}

// hostPlatform is this host's platform, as the runtime (and docker, podman)
// name it; a 32-bit ARM host's variant is its CPU's architecture version.
func hostPlatform() platform {
	p := platform{os: runtime.GOOS, arch: runtime.GOARCH}
	if p.arch == "arm" {
		p.variant = armVariant()
	}
	return p
}

// armVariant reads the ARM architecture version from /proc/cpuinfo ("CPU
// architecture: 7") as containerd does; v7 when it cannot tell, and for a
// 32-bit userland on a v8 CPU.
func armVariant() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "v7"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "CPU architecture" {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 5 && n < 7 {
			return "v" + strconv.Itoa(n)
		}
		return "v7"
	}
	return "v7"
}

// normVariant is a variant with the architecture's default filled in: an
// arm64 image without one is v8, an arm image v7.
func normVariant(arch, variant string) string {
	switch {
	case variant != "":
		return variant
	case arch == "arm64":
		return "v8"
	case arch == "arm":
		return "v7"
	}
	return ""
}

// matches reports whether an image for have runs where w is wanted. An
// image that names no OS is taken for Linux; a wanted platform without a
// variant takes any of its architecture.
func (w wantPlatform) matches(have platform) bool {
	if have.os != "" && have.os != w.os || have.arch != w.arch {
		return false
	}
	return w.variant == "" || normVariant(w.arch, w.variant) == normVariant(have.arch, have.variant)
}

func fromV1(p *v1.Platform) platform {
	if p == nil {
		return platform{}
	}
	return platform{os: p.OS, arch: p.Architecture, variant: p.Variant}
}

// choosePlatform picks the image for w from an index: the one of exactly its
// variant first (an amd64 host takes linux/amd64 before linux/amd64/v3, a
// platform of linux/arm linux/arm/v7 before v6), else the first that matches. An index without one is an error that lists
// what it has.
func choosePlatform(ref string, im *v1.IndexManifest, w wantPlatform) (v1.Descriptor, error) {
	exact := func(p platform) bool { return normVariant(p.arch, p.variant) == normVariant(w.arch, w.variant) }
	var have []string
	best, unnamed := -1, -1
	for i, d := range im.Manifests {
		p := fromV1(d.Platform)
		if p.os == "unknown" || !d.MediaType.IsImage() && !d.MediaType.IsIndex() {
			continue // buildx's attestations, signatures, other artifacts
		}
		if d.Platform == nil {
			// The image's config tells (describe checks it).
			unnamed = i
			have = append(have, "an image of no stated platform")
			continue
		}
		have = append(have, p.String())
		if !d.MediaType.IsImage() || !w.matches(p) {
			continue
		}
		if best < 0 || exact(p) && !exact(fromV1(im.Manifests[best].Platform)) {
			best = i
		}
	}
	switch {
	case best >= 0:
		return im.Manifests[best], nil
	case unnamed >= 0 && len(have) == 1 && im.Manifests[unnamed].MediaType.IsImage():
		return im.Manifests[unnamed], nil
	}
	slices.Sort(have)
	have = slices.Compact(have)
	if len(have) == 0 {
		return v1.Descriptor{}, errorf(ErrInvalid, "%s: the index holds no image for any platform", ref)
	}
	return v1.Descriptor{}, errorf(ErrInvalid, "%s: the index has no image for %s, only for %s: name one of them as the platform", ref, w.describe(), strings.Join(have, ", "))
}
