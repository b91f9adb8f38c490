package rootfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Stack is the root's trees as overlayfs merges them, uppermost first: the
// upper directory and the lower ones of an overlay root, or the one
// directory of another.
func (r *Root) Stack() []string {
	if r.Overlay != nil {
		return append([]string{r.Overlay.Upper}, r.Overlay.Lower...)
	}
	return []string{r.Dir}
}

// maxMergedFile bounds what ReadMerged reads (a passwd or group file).
const maxMergedFile = 4 << 20

// ReadMerged reads the file at rel (a path inside the machine) as the merged
// view of stack (uppermost first) shows it, without mounting anything: the
// uppermost tree that has it wins, unless a tree above whites it (or a
// directory on its way) out, or makes a directory on its way opaque. Every
// lookup stays inside its tree (a symbolic link in an image never leads out),
// and a symbolic link at rel itself, which the merged view could resolve
// through another tree, is refused. It returns an error matching
// fs.ErrNotExist when the merged view has no such file.
func ReadMerged(stack []string, rel string) ([]byte, error) {
	parts := strings.Split(strings.Trim(filepath.Clean("/"+rel), "/"), "/")
	for _, tree := range stack {
		found, hidden, err := lookupIn(tree, parts, false)
		if err != nil {
			return nil, err
		}
		if found != nil {
			defer found.Close()
			return io.ReadAll(io.LimitReader(found, maxMergedFile))
		}
		if hidden {
			break
		}
	}
	return nil, &fs.PathError{Op: "open", Path: rel, Err: fs.ErrNotExist}
}

// ExistsMerged says whether the merged view of stack has something (a file
// of any type, a symbolic link too) at rel.
func ExistsMerged(stack []string, rel string) bool {
	parts := strings.Split(strings.Trim(filepath.Clean("/"+rel), "/"), "/")
	for _, tree := range stack {
		found, hidden, err := lookupIn(tree, parts, true)
		if found != nil {
			found.Close()
			return true
		}
		if err != nil || hidden {
			return false
		}
	}
	return false
}

// lookupIn looks for parts in one tree: the open file when the tree has it
// (a regular file, or with anyType whatever it is, opened O_PATH); hidden
// when the tree hides it from the trees below (a whiteout, or an opaque
// directory on the way).
func lookupIn(tree string, parts []string, anyType bool) (found *os.File, hidden bool, err error) {
	root, err := unix.Open(tree, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, &fs.PathError{Op: "open", Path: tree, Err: err}
	}
	defer unix.Close(root)
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fd, err := openInRoot(root, p, unix.O_PATH|unix.O_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil, hidden, nil
		}
		if err != nil {
			return nil, false, &fs.PathError{Op: "open", Path: filepath.Join(tree, p), Err: err}
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		switch {
		case err != nil:
			unix.Close(fd)
			return nil, false, &fs.PathError{Op: "stat", Path: filepath.Join(tree, p), Err: err}
		case st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0:
			unix.Close(fd)
			return nil, true, nil // whited out
		case i < len(parts)-1:
			if st.Mode&unix.S_IFMT == unix.S_IFDIR && isOpaqueDir(fd) {
				hidden = true
			}
			// A symbolic link on the way is followed by the next, longer
			// lookup, inside this tree.
			unix.Close(fd)
			continue
		case anyType:
			return os.NewFile(uintptr(fd), "/"+p), true, nil
		case st.Mode&unix.S_IFMT != unix.S_IFREG:
			unix.Close(fd)
			return nil, false, &fs.PathError{Op: "open", Path: "/" + p, Err: errors.New("not a regular file")}
		}
		f, err := os.OpenFile(filepath.Join("/proc/self/fd", strconv.Itoa(fd)), os.O_RDONLY, 0)
		unix.Close(fd)
		if err != nil {
			return nil, false, err
		}
		return f, true, nil
	}
	return nil, hidden, nil
}

// isOpaqueDir says whether the directory fd (an O_PATH one) is an opaque
// directory of overlayfs.
func isOpaqueDir(fd int) bool {
	buf := make([]byte, 2)
	n, err := unix.Getxattr(filepath.Join("/proc/self/fd", strconv.Itoa(fd)), "trusted.overlay.opaque", buf)
	return err == nil && n == 1 && buf[0] == 'y'
}
