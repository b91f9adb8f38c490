package rootfs

import (
	"context"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// OCI whiteouts (image-spec layer.md) become overlayfs's own, so that the
// layers stack as overlay lower dirs with nothing rewritten at mount time:
//
//   - DIR/.wh.NAME hides DIR/NAME of the layers below: it becomes a 0:0
//     character device NAME, overlayfs's whiteout. If the layer has NAME
//     itself, that wins (a whiteout hides only what is below) and the marker
//     just goes.
//   - DIR/.wh..wh..opq hides everything below in DIR: DIR gets the xattr
//     trusted.overlay.opaque=y.
//   - Other .wh..wh.* names are aufs's bookkeeping, dropped.
//
// The markers are what the extractor unpacked, so they are already inside the
// layer (a marker reached through a symlink lies where the symlink resolved
// to inside the layer). A marker that names no entry of its own directory
// (.wh., .wh.., .wh...) or is a directory is refused; none is left as a file.

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

// layerSum is what convertWhiteouts learns about a layer.
type layerSum struct {
	size       int64 // disk usage, each inode once
	files      int64
	opaqueRoot bool // ./.wh..wh..opq: the layer hides every layer below
}

// convertWhiteouts turns the OCI whiteouts of the unpacked layer at tree into
// overlayfs ones, keeping the mtimes of the directories it changes, and
// measures the layer.
func convertWhiteouts(ctx context.Context, tree string) (layerSum, error) {
	var sum layerSum
	seen := map[inode]bool{}
	changed := map[string]bool{}
	err := walkTree(ctx, tree, func(n *node) error {
		if n.rel != "" && strings.HasPrefix(n.name, whiteoutPrefix) {
			changed[parentRel(n.rel)] = true
			sum.opaqueRoot = sum.opaqueRoot || n.rel == whiteoutOpaque
			return convertWhiteout(n)
		}
		sum.files++
		if n.st.Nlink > 1 && !n.isDir() {
			k := inode{n.st.Dev, n.st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		sum.size += n.st.Blocks * 512
		return nil
	}, func(dir *node) error {
		if !changed[dir.rel] {
			return nil
		}
		ts := []unix.Timespec{dir.st.Atim, dir.st.Mtim}
		if err := unix.UtimesNanoAt(dir.fd, ".", ts, 0); err != nil {
			return &os.PathError{Op: "utimes", Path: dir.rel, Err: err}
		}
		return nil
	})
	return sum, err
}

func parentRel(rel string) string {
	d, _ := splitRel(rel)
	return d
}

// convertWhiteout handles the marker n (a name starting .wh.).
func convertWhiteout(n *node) error {
	target := strings.TrimPrefix(n.name, whiteoutPrefix)
	if n.isDir() {
		return errorf(ErrInvalid, "whiteout %q is a directory", n.rel)
	}
	switch {
	case n.name == whiteoutOpaque:
		if err := unix.Fsetxattr(n.parent, opaqueXattr, []byte("y"), 0); err != nil {
			return &os.PathError{Op: "setxattr " + opaqueXattr, Path: parentRel(n.rel), Err: err}
		}
	case strings.HasPrefix(target, whiteoutPrefix):
		// aufs's .wh..wh.plnk and the like: nothing to the image.
	case target == "" || target == "." || target == "..":
		return errorf(ErrInvalid, "whiteout %q names no file in its directory", n.rel)
	default:
		if err := whiteoutAt(n.parent, target, n.rel); err != nil {
			return err
		}
	}
	if err := unix.Unlinkat(n.parent, n.name, 0); err != nil {
		return &os.PathError{Op: "unlink", Path: n.rel, Err: err}
	}
	return nil
}

// whiteoutAt makes pfd/name an overlayfs whiteout unless the layer has name.
func whiteoutAt(pfd int, name, rel string) error {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil {
		return nil // the layer's own entry wins
	}
	if err != unix.ENOENT {
		return &os.PathError{Op: "stat", Path: rel, Err: err}
	}
	if err := unix.Mknodat(pfd, name, unix.S_IFCHR, 0); err != nil {
		return &os.PathError{Op: "mknod whiteout", Path: rel, Err: err}
	}
	if err := unix.Fchownat(pfd, name, 0, 0, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "chown", Path: rel, Err: err}
	}
	return nil
}

// isWhiteout reports whether st is an overlayfs whiteout.
func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// isOpaque reports whether the directory fd is an opaque one of a layer.
func isOpaque(fd int) bool {
	buf := make([]byte, 4)
	n, err := unix.Fgetxattr(fd, opaqueXattr, buf)
	return err == nil && n == 1 && buf[0] == 'y'
}
