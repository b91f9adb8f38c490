package userns

import (
	"strconv"
	"strings"

	"github.com/berthd/berth/internal/errdefs"
)

// kernelFeature is something berth needs from the kernel and the release that
// brought it; needs says so with its verb ("idmapped mounts need").
type kernelFeature struct {
	needs        string
	major, minor int
}

var (
	// idmappedMounts: mount_setattr(2) with MOUNT_ATTR_IDMAP (ext4, xfs,
	// vfat; btrfs from 5.15, tmpfs from 6.3).
	idmappedMounts = kernelFeature{"idmapped mounts need", 5, 12}
	// idmappedOverlay: overlayfs taking idmapped mounts as its layers.
	idmappedOverlay = kernelFeature{"overlayfs over idmapped layers needs", 5, 19}
)

// check says whether release has the feature: "overlayfs over idmapped
// layers needs Linux 5.19 or newer (this kernel is 5.15.0-91-generic)". A
// release it cannot read passes: what berth then tries fails with the
// kernel's own error.
func (f kernelFeature) check(release string) error {
	major, minor, ok := parseRelease(release)
	if !ok || major > f.major || major == f.major && minor >= f.minor {
		return nil
	}
	return errdefs.Errorf(errdefs.ErrUnsupported, "%s Linux %d.%d or newer (this kernel is %s)", f.needs, f.major, f.minor, release)
}

// parseRelease reads the major and minor numbers of a kernel release such as
// "6.18.44-fc-v857" or "5.19.0-rc1".
func parseRelease(release string) (major, minor int, ok bool) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	end := strings.IndexFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(parts[1])
	}
	minor, err2 := strconv.Atoi(parts[1][:end])
	return major, minor, err1 == nil && err2 == nil
}
