package rootfs

import (
	"errors"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
		hint string
	}{
		{"web", true, ""},
		{"debian-12", true, ""},
		{"a", true, ""},
		{"0day", true, ""},
		{strings.Repeat("a", 63), true, ""},
		{strings.Repeat("a", 64), false, "at most 63"},
		{"", false, "empty"},
		{"Web", false, `did you mean "web"`},
		{"-web", false, "starting and ending"},
		{"web-", false, "starting and ending"},
		{"../etc", false, "is not a valid name"},
		{".tmp", false, "is not a valid name"},
		{"a/b", false, "is not a valid name"},
		{"a_b", false, "is not a valid name"},
		{"a.b", false, "is not a valid name"},
		{"sha256:ab", false, "is not a valid name"},
	} {
		err := ValidName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ValidName(%q) = %v, not ErrInvalid", tc.name, err)
			}
			if !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("ValidName(%q) = %q, want it to mention %q", tc.name, err, tc.hint)
			}
		}
	}
}

func TestChooseStrategy(t *testing.T) {
	ext4 := fsCaps{fsType: "ext4", overlay: true}
	xfs := fsCaps{fsType: "xfs", overlay: true, reflink: true}
	btrfs := fsCaps{fsType: "btrfs", overlay: true, reflink: true, btrfs: true}
	nested := fsCaps{fsType: "overlayfs"}
	for _, tc := range []struct {
		name   string
		want   Strategy
		caps   fsCaps
		subvol bool
		got    Strategy
		err    string
	}{
		{"ext4 auto", StrategyAuto, ext4, false, StrategyOverlay, ""},
		{"ext4 empty means auto", "", ext4, false, StrategyOverlay, ""},
		{"ext4 copy", StrategyCopy, ext4, false, StrategyCopy, ""},
		{"ext4 overlay", StrategyOverlay, ext4, false, StrategyOverlay, ""},
		{"ext4 reflink", StrategyReflink, ext4, false, "", "ext4 here does not support reflinks"},
		{"ext4 btrfs", StrategyBtrfs, ext4, false, "", "needs the state directory on btrfs; it is on ext4"},
		{"xfs auto", StrategyAuto, xfs, false, StrategyReflink, ""},
		{"xfs overlay", StrategyOverlay, xfs, false, StrategyOverlay, ""},
		{"btrfs auto", StrategyAuto, btrfs, true, StrategyBtrfs, ""},
		{"btrfs auto, image not a subvolume", StrategyAuto, btrfs, false, StrategyReflink, ""},
		{"btrfs explicit, image not a subvolume", StrategyBtrfs, btrfs, false, "", "not a btrfs subvolume"},
		{"on overlayfs auto", StrategyAuto, nested, false, StrategyCopy, ""},
		{"on overlayfs overlay", StrategyOverlay, nested, false, "", "cannot be its upper layer"},
		{"unknown", Strategy("zfs"), ext4, false, "", `root strategy "zfs"`},
	} {
		got, err := chooseStrategy(tc.want, tc.caps, tc.subvol)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.got {
			t.Errorf("%s: = %q, %v; want %q", tc.name, got, err, tc.got)
		}
	}
}

func TestParseStrategy(t *testing.T) {
	for in, want := range map[string]Strategy{"": StrategyAuto, "auto": StrategyAuto, "overlay": StrategyOverlay,
		"btrfs": StrategyBtrfs, "reflink": StrategyReflink, "copy": StrategyCopy} {
		if got, err := ParseStrategy(in); err != nil || got != want {
			t.Errorf("ParseStrategy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseStrategy("Overlay"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseStrategy(Overlay) = %v, want ErrInvalid", err)
	}
}

func TestCleanEntryPath(t *testing.T) {
	for _, tc := range []struct {
		in, out, err string
	}{
		{"./", "", ""},
		{".", "", ""},
		{"/", "", ""},
		{"./etc/passwd", "etc/passwd", ""},
		{"etc//passwd", "etc/passwd", ""},
		{"/etc/passwd", "etc/passwd", ""}, // absolute: contained
		{"usr/lib/../bin/sh", "usr/bin/sh", ""},
		{"a/b/../../c", "c", ""},
		{"../etc/passwd", "", "climbs out"},
		{"a/../../etc", "", "climbs out"},
		{"/../etc", "", "climbs out"},
		{"a\x00b", "", "NUL"},
		{strings.Repeat("a/", 256) + "f", "", "directories deep"},
		{strings.Repeat("a/", 255) + "f", strings.Repeat("a/", 255) + "f", ""},
		{strings.Repeat("x", 4096), "", "bytes long"},
	} {
		got, err := cleanEntryPath(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrInvalid) {
				t.Errorf("cleanEntryPath(%.40q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.out {
			t.Errorf("cleanEntryPath(%.40q) = %q, %v; want %q", tc.in, got, err, tc.out)
		}
	}
}

func TestSniff(t *testing.T) {
	for _, tc := range []struct {
		head []byte
		want Compression
	}{
		{[]byte{0x1f, 0x8b, 8, 0}, CompressGzip},
		{[]byte{0xfd, '7', 'z', 'X', 'Z', 0}, CompressXz},
		{[]byte{0x28, 0xb5, 0x2f, 0xfd, 0}, CompressZstd},
		{[]byte("BZh91AY"), CompressBzip2},
		{[]byte("./etc/\x00\x00"), CompressNone},
		{nil, CompressNone},
	} {
		if got := sniff(tc.head); got != tc.want {
			t.Errorf("sniff(%q) = %s, want %s", tc.head, got, tc.want)
		}
	}
}

func TestCompressionFor(t *testing.T) {
	for in, want := range map[string]Compression{"a.tar": CompressNone, "a.tar.gz": CompressGzip, "a.tgz": CompressGzip,
		"a.tar.xz": CompressXz, "a.tar.zst": CompressZstd, "/x/y.tzst": CompressZstd} {
		if got, err := CompressionFor(in); err != nil || got != want {
			t.Errorf("CompressionFor(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	if _, err := CompressionFor("a.zip"); !errors.Is(err, ErrInvalid) {
		t.Errorf("CompressionFor(a.zip) = %v, want ErrInvalid", err)
	}
}

func TestOverlayMountData(t *testing.T) {
	o := &Overlay{Lower: []string{"/s/images/sha256/ab/rootfs"}, Upper: "/s/machines/web/upper", Work: "/s/machines/web/work"}
	want := "lowerdir=/s/images/sha256/ab/rootfs,upperdir=/s/machines/web/upper,workdir=/s/machines/web/work,index=off"
	if got := o.MountData(); got != want {
		t.Errorf("MountData = %q, want %q", got, want)
	}
	o = &Overlay{Lower: []string{"/a,b:c\\d"}, Upper: "/u", Work: "/w"}
	if got := o.MountData(); !strings.HasPrefix(got, `lowerdir=/a\,b\:c\\d,`) {
		t.Errorf("MountData = %q: special characters not escaped", got)
	}
}

func TestValidDigest(t *testing.T) {
	good := "sha256:" + strings.Repeat("ab", 32)
	for d, want := range map[string]bool{good: true, strings.ToUpper(good): false, "sha256:abc": false,
		strings.Repeat("ab", 32): false, "sha512:" + strings.Repeat("ab", 32): false, "sha256:" + strings.Repeat("zz", 32): false} {
		if got := validDigest(d); got != want {
			t.Errorf("validDigest(%q) = %v, want %v", d, got, want)
		}
	}
}

func TestSourceCheck(t *testing.T) {
	for _, tc := range []struct {
		src Source
		err string
	}{
		{Dir{Path: "relative/dir"}, "not an absolute path"},
		{Dir{Path: "/nonexistent-berth-dir"}, "no such file"},
		{Tar{Location: "/nonexistent.tar"}, "no such file"},
		{Tar{Location: "ftp://x/y.tar"}, "only http:// and https://"},
		{Tar{Location: "https://example.invalid/x.tar", SHA256: "abc"}, "not 64 hex digits"},
		{Tar{Location: "/", SHA256: ""}, "is a directory"},
		{Debootstrap{Suite: "Bookworm"}, "not a release name"},
		{Debootstrap{Suite: "bookworm", Variant: "tiny"}, "variant"},
		{Debootstrap{Suite: "bookworm", Mirror: "ftp://m"}, "mirror"},
		{Debootstrap{Suite: "bookworm", Packages: []string{"Systemd"}}, "not a Debian package"},
	} {
		err := tc.src.check()
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: check = %v, want %q", tc.src, err, tc.err)
		}
	}
	if s := (Debootstrap{Suite: "bookworm", Packages: []string{"systemd", "dbus"}}).String(); s != "debootstrap:bookworm minbase http://deb.debian.org/debian +systemd,dbus" {
		t.Errorf("Debootstrap.String = %q", s)
	}
	if s := (Tar{Location: "/x.tar", SHA256: strings.Repeat("AB", 32)}).String(); s != "tar:/x.tar#sha256="+strings.Repeat("ab", 32) {
		t.Errorf("Tar.String = %q", s)
	}
}
