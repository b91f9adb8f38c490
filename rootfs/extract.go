package rootfs

import (
	"archive/tar"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Safe extraction. The archive is hostile input; the destination is a fresh
// directory that nothing but this extractor writes to while it runs. So the only
// way out of the destination is through what the archive itself plants, and the
// rules are the ones containerd's archive package and umoci follow:
//
//   - An entry's name is cleaned as if it were absolute: a leading "/" is
//     dropped (contained); a ".." that would climb above the root is refused.
//   - Every directory on the way to an entry is resolved *inside* the
//     destination: openat2(RESOLVE_IN_ROOT) makes symlinks met on the way resolve
//     as if the destination were "/", exactly as they will inside the machine. A
//     symlink to "/etc" followed by "link/passwd" writes DEST/etc/passwd.
//   - The entry's own last element is never followed: whatever is there (a
//     symlink planted by an earlier entry, a directory being replaced by a
//     symlink) is removed and the new entry created with O_EXCL|O_NOFOLLOW, or
//     for a directory over a directory, kept.
//   - A hard link's target is resolved the same way and linked without following
//     it, so it is always a file inside the destination.
//   - Names longer than the kernel's PATH_MAX or deeper than maxDepth are refused
//     (tar bombs of deep paths); symlink loops fail with ELOOP.
//
// Owners (numeric, as --numeric-owner), modes with setuid/setgid/sticky, xattrs
// (security.capability included, set after chown which clears it), hard links,
// device nodes, fifos and mtimes are kept. Directory mtimes are set at the end,
// after their contents stopped changing them.

const (
	maxPathLen = 4095 // PATH_MAX less the NUL
	maxDepth   = 256  // far deeper than any real root filesystem
)

// cleanEntryPath turns an archive member name into a path relative to the
// destination ("" for the destination itself).
func cleanEntryPath(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", errorf(ErrInvalid, "name contains a NUL byte")
	}
	// A ".." that climbs above the archive's root is how archives attack; no
	// honest root filesystem archive has one, so refuse rather than guess.
	depth := 0
	for _, el := range strings.Split(name, "/") {
		switch el {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return "", errorf(ErrInvalid, "name climbs out of the archive with \"..\"")
			}
		default:
			depth++
		}
	}
	rel := strings.TrimPrefix(path.Clean("/"+name), "/")
	if len(rel) > maxPathLen {
		return "", errorf(ErrInvalid, "name is %d bytes long: more than the %d a path may have", len(rel), maxPathLen)
	}
	if n := strings.Count(rel, "/") + 1; rel != "" && n > maxDepth {
		return "", errorf(ErrInvalid, "name is %d directories deep: more than the %d allowed", n, maxDepth)
	}
	return rel, nil
}

func splitRel(rel string) (dir, name string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// extractor unpacks one archive into one destination.
type extractor struct {
	ctx     context.Context
	root    int    // destination, O_RDONLY|O_DIRECTORY
	dest    string // for messages
	cached  string // the directory cachedFd resolves, valid until something is removed
	cacheFd int
	dirs    map[string]unix.Timespec // directory mtimes to set at the end
	warned  map[string]bool
	buf     []byte // makeFile's copy buffer, one for the whole archive
}

// copyBufSize is the size of the extractor's copy buffer: a write system
// call per 256 KiB of a file at most.
const copyBufSize = 256 << 10

// extractTar unpacks the tar stream r into the existing, empty directory dest.
func extractTar(ctx context.Context, r io.Reader, dest string) error {
	root, err := unix.Open(dest, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dest, Err: err}
	}
	// The root's mtime is 0 unless the archive has a "./" entry, as for the
	// directories it implies, so that one archive always unpacks to one digest.
	x := &extractor{ctx: ctx, root: root, dest: dest, cacheFd: -1, dirs: map[string]unix.Timespec{"": {}}, warned: map[string]bool{}}
	defer x.close()
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
	}
	return x.finish()
}

func (x *extractor) close() {
	x.dropCache()
	unix.Close(x.root)
}

func (x *extractor) dropCache() {
	if x.cacheFd >= 0 {
		unix.Close(x.cacheFd)
	}
	x.cacheFd, x.cached = -1, ""
}

// entry unpacks one archive member: it checks the name and type, finds the
// parent directory inside the destination, clears the way and creates the
// member by its type.
func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	rel, err := cleanEntryPath(hdr.Name)
	if err != nil {
		return err
	}
	mode := uint32(hdr.Mode) & 07777
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse, tar.TypeDir,
		tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return errorf(ErrInvalid, "entry type %q is not supported in a root filesystem archive", string(hdr.Typeflag))
	}
	if rel == "" {
		return x.rootEntry(hdr, mode)
	}
	dir, name := splitRel(rel)
	pfd, err := x.parent(dir)
	if err != nil {
		return err
	}
	isDir, replaced, err := x.clear(pfd, name, rel, hdr.Typeflag == tar.TypeDir)
	if replaced {
		// The cache no longer holds pfd; it stays open for this entry.
		defer unix.Close(pfd)
	}
	if err != nil {
		return err
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.makeDir(pfd, name, rel, hdr, mode, isDir)
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse:
		return x.makeFile(pfd, name, rel, hdr, mode, r)
	case tar.TypeSymlink:
		return x.makeSymlink(pfd, name, rel, hdr, mode)
	case tar.TypeLink:
		return x.makeHardLink(pfd, name, rel, hdr)
	default: // char, block, fifo
		return x.makeNode(pfd, name, rel, hdr, mode)
	}
}

// rootEntry applies the archive's "./" entry to the destination itself, which
// exists already: only its metadata is the archive's.
func (x *extractor) rootEntry(hdr *tar.Header, mode uint32) error {
	if hdr.Typeflag != tar.TypeDir {
		return errorf(ErrInvalid, "the archive's root must be a directory")
	}
	if err := x.dirMeta(x.root, hdr, mode); err != nil {
		return err
	}
	x.dirs[""] = unix.NsecToTimespec(hdr.ModTime.UnixNano())
	return nil
}

// clear makes room at pfd/name for an entry, reporting whether a directory is
// there (kept when the entry is a directory too) and whether pfd was dropped
// from the cache, so the caller must close it.
//
// Whatever an earlier entry put there is replaced, never written through.
// Paths resolved through the removed node are stale, so the cache goes.
func (x *extractor) clear(pfd int, name, rel string, entryIsDir bool) (isDir, replaced bool, err error) {
	var st unix.Stat_t
	err = unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	exists := err == nil
	if err != nil && err != unix.ENOENT {
		return false, false, &os.PathError{Op: "stat", Path: rel, Err: err}
	}
	isDir = exists && st.Mode&unix.S_IFMT == unix.S_IFDIR
	if !exists || (isDir && entryIsDir) {
		return isDir, false, nil
	}
	x.cacheFd, x.cached = -1, ""
	return isDir, true, x.remove(pfd, name, isDir)
}

// makeDir creates a directory entry, or keeps the directory that is there, and
// sets its metadata; its mtime waits for finish, as its contents will change it.
func (x *extractor) makeDir(pfd int, name, rel string, hdr *tar.Header, mode uint32, exists bool) error {
	if !exists {
		if err := unix.Mkdirat(pfd, name, 0o700); err != nil {
			return &os.PathError{Op: "mkdir", Path: rel, Err: err}
		}
	}
	fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: rel, Err: err}
	}
	defer unix.Close(fd)
	if err := x.dirMeta(fd, hdr, mode); err != nil {
		return err
	}
	x.dirs[rel] = unix.NsecToTimespec(hdr.ModTime.UnixNano())
	return nil
}

// makeFile creates a regular file with the entry's contents. It is made 0600
// and given its mode only after the chown, which would clear setuid and setgid;
// xattrs come after the chown too, which clears security.capability.
func (x *extractor) makeFile(pfd int, name, rel string, hdr *tar.Header, mode uint32, r io.Reader) error {
	fd, err := unix.Openat(pfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	if x.buf == nil {
		x.buf = make([]byte, copyBufSize)
	}
	// Hiding f's ReadFrom makes the copy use the buffer: ReadFrom would
	// find no file to copy from and fall back to a copy with a buffer of
	// its own, made anew for every file.
	if _, err := io.CopyBuffer(struct{ io.Writer }{f}, r, x.buf); err != nil {
		return fmt.Errorf("write %s: %w", rel, err)
	}
	if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return &os.PathError{Op: "chmod", Path: rel, Err: err}
	}
	if err := x.setXattrs(hdr, rel, func(n string, v []byte) error { return unix.Fsetxattr(fd, n, v, 0) }); err != nil {
		return err
	}
	return x.times(pfd, name, rel, hdr)
}

// makeSymlink creates a symlink entry.
func (x *extractor) makeSymlink(pfd int, name, rel string, hdr *tar.Header, mode uint32) error {
	if len(hdr.Linkname) > maxPathLen || strings.IndexByte(hdr.Linkname, 0) >= 0 || hdr.Linkname == "" {
		return errorf(ErrInvalid, "symlink target is empty, too long or holds a NUL byte")
	}
	// The target is stored as is: it is only ever resolved inside the
	// machine's root (or inside the destination by this extractor).
	if err := unix.Symlinkat(hdr.Linkname, pfd, name); err != nil {
		return &os.PathError{Op: "symlink", Path: rel, Err: err}
	}
	return x.nodeMeta(pfd, name, rel, hdr, mode, false)
}

// makeHardLink links an entry to an earlier one, resolving the target inside
// the destination like any other name, so a link never reaches outside it.
func (x *extractor) makeHardLink(pfd int, name, rel string, hdr *tar.Header) error {
	trel, err := cleanEntryPath(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
	}
	if trel == "" {
		return errorf(ErrInvalid, "hard link to the archive's root directory")
	}
	tdir, tname := splitRel(trel)
	tfd, err := resolveInRoot(x.root, tdir)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
	}
	defer unix.Close(tfd)
	// linkat without AT_SYMLINK_FOLLOW links a symlink itself, never what it
	// points to.
	if err := unix.Linkat(tfd, tname, pfd, name, 0); err != nil {
		if err == unix.ENOENT {
			return errorf(ErrInvalid, "hard link target %q is not in the archive before it", hdr.Linkname)
		}
		return &os.PathError{Op: "link", Path: rel, Err: err}
	}
	return nil
}

// makeNode creates a character or block device or a fifo entry.
func (x *extractor) makeNode(pfd int, name, rel string, hdr *tar.Header, mode uint32) error {
	typ := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	if err := unix.Mknodat(pfd, name, typ|mode, int(dev)); err != nil {
		return &os.PathError{Op: "mknod", Path: rel, Err: err}
	}
	return x.nodeMeta(pfd, name, rel, hdr, mode, true)
}

// dirMeta sets a directory's owner, mode and xattrs through its descriptor.
func (x *extractor) dirMeta(fd int, hdr *tar.Header, mode uint32) error {
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return &os.PathError{Op: "chown", Path: hdr.Name, Err: err}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return &os.PathError{Op: "chmod", Path: hdr.Name, Err: err}
	}
	return x.setXattrs(hdr, hdr.Name, func(n string, v []byte) error { return unix.Fsetxattr(fd, n, v, 0) })
}

// nodeMeta sets the owner, mode (not for symlinks), xattrs and times of a node
// this entry just created at pfd/name.
func (x *extractor) nodeMeta(pfd int, name, rel string, hdr *tar.Header, mode uint32, chmod bool) error {
	if err := unix.Fchownat(pfd, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "chown", Path: rel, Err: err}
	}
	if chmod {
		// Not a symlink (just made by mknod), so following is moot; mknod's mode
		// was cut by the umask.
		if err := unix.Fchmodat(pfd, name, mode, 0); err != nil {
			return &os.PathError{Op: "chmod", Path: rel, Err: err}
		}
	}
	if err := x.setXattrs(hdr, rel, func(n string, v []byte) error {
		return unix.Lsetxattr(fmt.Sprintf("/proc/self/fd/%d/%s", pfd, name), n, v, 0)
	}); err != nil {
		return err
	}
	return x.times(pfd, name, rel, hdr)
}

func (x *extractor) times(pfd int, name, rel string, hdr *tar.Header) error {
	ts := entryTimes(hdr)
	if err := unix.UtimesNanoAt(pfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimes", Path: rel, Err: err}
	}
	return nil
}

func entryTimes(hdr *tar.Header) []unix.Timespec {
	m := unix.NsecToTimespec(hdr.ModTime.UnixNano())
	a := m
	if !hdr.AccessTime.IsZero() {
		a = unix.NsecToTimespec(hdr.AccessTime.UnixNano())
	}
	return []unix.Timespec{a, m}
}

// entryXattrs returns the xattrs an entry carries: GNU tar and Go write them as
// SCHILY.xattr.NAME records, bsdtar as LIBARCHIVE.xattr.NAME (URL-encoded name,
// base64 value).
func entryXattrs(hdr *tar.Header) map[string][]byte {
	var out map[string][]byte
	for k, v := range hdr.PAXRecords {
		var name string
		var val []byte
		if n, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			name, val = n, []byte(v)
		} else if n, ok := strings.CutPrefix(k, "LIBARCHIVE.xattr."); ok {
			dn, err1 := url.QueryUnescape(n)
			dv, err2 := base64.StdEncoding.DecodeString(v)
			if err1 != nil || err2 != nil {
				continue
			}
			name, val = dn, dv
		} else {
			continue
		}
		if out == nil {
			out = map[string][]byte{}
		}
		out[name] = val
	}
	return out
}

// setXattrs applies an entry's xattrs. trusted.overlay.* ones are dropped: an
// image is an overlayfs lower layer, and overlay's own attributes planted in it
// (redirects, metacopy, opaque) would change what the machine sees.
func (x *extractor) setXattrs(hdr *tar.Header, rel string, set func(string, []byte) error) error {
	xs := entryXattrs(hdr)
	if len(xs) == 0 {
		return nil
	}
	names := make([]string, 0, len(xs))
	for n := range xs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.HasPrefix(n, "trusted.overlay.") {
			x.warnOnce("overlay-xattr", "archive carries overlayfs xattrs; they are dropped", "path", rel, "xattr", n)
			continue
		}
		if err := set(n, xs[n]); err != nil {
			if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
				x.warnOnce("xattr-"+n, "filesystem refuses an xattr from the archive; it is dropped", "path", rel, "xattr", n, "dest", x.dest)
				continue
			}
			return &os.PathError{Op: "setxattr " + n, Path: rel, Err: err}
		}
	}
	return nil
}

func (x *extractor) warnOnce(key, msg string, args ...any) {
	if x.warned[key] {
		return
	}
	x.warned[key] = true
	slog.Warn("rootfs: "+msg, args...)
}

// remove deletes what is at pfd/name so an entry can take its place.
func (x *extractor) remove(pfd int, name string, isDir bool) error {
	if !isDir {
		return unix.Unlinkat(pfd, name, 0)
	}
	// os.RemoveAll opens the parent by path (the /proc link to pfd, which is
	// inside the destination) and then works with unlinkat and O_NOFOLLOW.
	return os.RemoveAll(fmt.Sprintf("/proc/self/fd/%d/%s", pfd, name))
}

// parent returns a descriptor of the directory dir inside the destination,
// creating missing directories (owned by root, 0755, mtime 0 unless the archive
// names them later) the way tar does.
func (x *extractor) parent(dir string) (int, error) {
	if x.cacheFd >= 0 && x.cached == dir {
		return x.cacheFd, nil
	}
	fd, err := resolveInRoot(x.root, dir)
	if err == unix.ENOENT {
		fd, err = x.mkdirAll(dir)
	}
	if err != nil {
		if err == unix.ENOTDIR {
			return -1, errorf(ErrInvalid, "%q is not a directory", dir)
		}
		return -1, fmt.Errorf("resolve %q in the destination: %w", dir, err)
	}
	x.dropCache()
	x.cached, x.cacheFd = dir, fd
	return fd, nil
}

func (x *extractor) mkdirAll(dir string) (int, error) {
	els := strings.Split(dir, "/")
	cur, err := unix.Dup(x.root)
	if err != nil {
		return -1, err
	}
	for i, el := range els {
		p := strings.Join(els[:i+1], "/")
		next, err := resolveInRoot(x.root, p)
		if err == unix.ENOENT {
			if err := unix.Mkdirat(cur, el, 0o755); err != nil {
				unix.Close(cur)
				if err == unix.EEXIST {
					return -1, errorf(ErrInvalid, "%q is a symlink to a directory that does not exist", p)
				}
				return -1, &os.PathError{Op: "mkdir", Path: p, Err: err}
			}
			if err := unix.Fchmodat(cur, el, 0o755, 0); err != nil {
				unix.Close(cur)
				return -1, &os.PathError{Op: "chmod", Path: p, Err: err}
			}
			if _, ok := x.dirs[p]; !ok {
				x.dirs[p] = unix.Timespec{}
			}
			next, err = resolveInRoot(x.root, p)
		}
		unix.Close(cur)
		if err != nil {
			return -1, err
		}
		cur = next
	}
	return cur, nil
}

// finish sets the directories' mtimes now that nothing is added to them.
func (x *extractor) finish() error {
	x.dropCache()
	for rel, m := range x.dirs {
		ts := []unix.Timespec{m, m}
		if rel == "" {
			if err := unix.UtimesNanoAt(x.root, ".", ts, 0); err != nil {
				return &os.PathError{Op: "utimes", Path: x.dest, Err: err}
			}
			continue
		}
		dir, name := splitRel(rel)
		pfd, err := resolveInRoot(x.root, dir)
		if err != nil {
			continue // replaced by a later entry
		}
		var st unix.Stat_t
		if unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = unix.UtimesNanoAt(pfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		unix.Close(pfd)
		if err != nil {
			return &os.PathError{Op: "utimes", Path: rel, Err: err}
		}
	}
	return nil
}
