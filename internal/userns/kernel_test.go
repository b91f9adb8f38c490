package userns

import (
	"errors"
	"testing"

	"github.com/berthd/berth/internal/errdefs"
)

// TestKernelFeatures: each feature passes from its release on and fails
// before it with a message naming both releases; a release berth cannot
// read passes (the kernel's own error speaks then).
func TestKernelFeatures(t *testing.T) {
	for _, tc := range []struct {
		f       kernelFeature
		release string
		want    string
	}{
		{idmappedMounts, "6.18.44-fc-v857", ""},
		{idmappedMounts, "5.12.0", ""},
		{idmappedMounts, "5.11.22-100-generic", "idmapped mounts need Linux 5.12 or newer (this kernel is 5.11.22-100-generic)"},
		{idmappedMounts, "4.19.0-27-amd64", "idmapped mounts need Linux 5.12 or newer (this kernel is 4.19.0-27-amd64)"},
		{idmappedOverlay, "5.19.0-rc1", ""},
		{idmappedOverlay, "6.1.0-18-amd64", ""},
		{idmappedOverlay, "5.15.0-91-generic", "overlayfs over idmapped layers needs Linux 5.19 or newer (this kernel is 5.15.0-91-generic)"},
		{idmappedOverlay, "5.4", "overlayfs over idmapped layers needs Linux 5.19 or newer (this kernel is 5.4)"},
		{idmappedOverlay, "garbage", ""},
		{idmappedOverlay, "5.x", ""},
	} {
		err := tc.f.check(tc.release)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s on %s: %v", tc.f.needs, tc.release, err)
			}
			continue
		}
		if err == nil || err.Error() != tc.want || !errors.Is(err, errdefs.ErrUnsupported) {
			t.Errorf("%s on %s: %v, want %q (ErrUnsupported)", tc.f.needs, tc.release, err, tc.want)
		}
	}
}
