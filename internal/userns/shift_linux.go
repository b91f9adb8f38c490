package userns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/berthd/berth/internal/errdefs"
	"golang.org/x/sys/unix"
)

// ShiftReport says what a shift did.
type ShiftReport struct {
	// Entries is how many files, directories, links, devices, FIFOs and
	// sockets the tree has; Changed how many of them got a new owner.
	Entries, Changed int
	// Outside counts the IDs (owners, ACL entries, capability root IDs)
	// that were in neither range and so were left as they are; Examples
	// names the first few ("usr/bin/x: uid 70000").
	Outside  int
	Examples []string
	// Mounts lists the mount points in the tree, which the shift did not
	// enter: it never leaves the tree's filesystem.
	Mounts []string
}

// maxExamples is how many outside IDs a ShiftReport names.
const maxExamples = 8

// Shift moves the owners of every file of the tree at root from the range
// of Size IDs at from to the one at to, users and groups alike: ID from+n
// becomes to+n, in each file's owner and group, in its POSIX ACLs (access
// and default) and in its file capability's root ID. It is the one-time
// shift of a machine's root where its filesystem cannot be idmapped, as
// systemd-nspawn --private-users-ownership=chown does (nspawn-patch-uid.c).
//
// The walk never follows a symbolic link and never leaves the tree's
// mount: a mount point inside is reported and not entered (btrfs
// subvolumes are part of the mount and are shifted). What chown(2) clears
// is put back: the set-user-ID and set-group-ID bits, and the file
// capability, written as revision 3 with the new root ID so that it works
// inside the machine and grants nothing on the host.
//
// IDs in neither range are left as they are, and counted in the report: in
// the machine they show as the overflow ID (nobody), exactly as the same
// file would through an idmapped mount, which has no mapping for them
// either. nspawn instead keeps their low 16 bits (to | id&0xFFFF), which
// hands such a file to whichever guest user that happens to be; mapping
// them to nobody would lose them for good. Left alone they stay
// unreachable, and a shift back restores the tree exactly.
//
// Shift is idempotent, so a re-run completes a run that died midway: an ID
// already in to's range counts as shifted (a hard link met again, a file
// done before the crash). The journal file, which must be outside the tree
// and is removed when the shift is complete, keeps what a crash between a
// chown and its repair would lose. Only the caller can tell a re-run from a
// new shift; it records the target before the first run and marks it done
// after the last (package rootfs does, in the root's metadata).
func Shift(ctx context.Context, root, journal string, from, to uint32) (*ShiftReport, error) {
	rep := &ShiftReport{}
	if from%Size != 0 || to%Size != 0 {
		return rep, errdefs.Errorf(errdefs.ErrInvalid, "shift %s from %d to %d: both must be multiples of %d", root, from, to, Size)
	}
	if from == to {
		return rep, nil
	}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return rep, &os.PathError{Op: "open", Path: root, Err: err}
	}
	dir := os.NewFile(uintptr(fd), root)
	defer dir.Close()
	var st unix.Statx_t
	if err := statFd(fd, &st); err != nil {
		return rep, &os.PathError{Op: "statx", Path: root, Err: err}
	}
	j, err := openJournal(journal, from, to)
	if err != nil {
		return rep, fmt.Errorf("shift %s: %w", root, err)
	}
	s := &shifter{ctx: ctx, root: root, from: from, to: to, mnt: mountOf(&st), j: j, rep: rep}
	if err := s.dir(dir, "", &st); err != nil {
		j.close()
		return rep, fmt.Errorf("shift %s from %d to %d: %w", root, from, to, err)
	}
	// Every owner on disk before the journal goes.
	if err := unix.Syncfs(fd); err != nil {
		j.close()
		return rep, &os.PathError{Op: "syncfs", Path: root, Err: err}
	}
	return rep, j.done()
}

// shifter is one run of Shift.
type shifter struct {
	ctx      context.Context
	root     string
	from, to uint32
	mnt      uint64
	j        *journal
	rep      *ShiftReport
}

// testHookAfterChown, when set, runs after each chown; an error it returns
// ends the shift there, as a crash would (tests only).
var testHookAfterChown func(rel string) error

// statxMask is what the walk needs to know of a file.
const statxMask = unix.STATX_TYPE | unix.STATX_MODE | unix.STATX_UID | unix.STATX_GID | unix.STATX_INO | unix.STATX_MNT_ID

func statFd(fd int, st *unix.Statx_t) error {
	return unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, statxMask, st)
}

// mountOf identifies the mount a file is on: its mount ID (Linux 5.8), or
// else its device.
func mountOf(st *unix.Statx_t) uint64 {
	if st.Mask&unix.STATX_MNT_ID != 0 {
		return st.Mnt_id
	}
	return 1<<63 | unix.Mkdev(st.Dev_major, st.Dev_minor)
}

// dir shifts a directory's entries, depth first, and then the directory
// itself, so that the tree's top is the last file to get its new owner.
func (s *shifter) dir(dir *os.File, rel string, st *unix.Statx_t) error {
	if err := s.ctx.Err(); err != nil {
		return err
	}
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return &os.PathError{Op: "readdir", Path: s.path(rel), Err: err}
	}
	sort.Strings(names) // the same order every run: reports and re-runs alike
	for _, name := range names {
		if err := s.child(int(dir.Fd()), filepath.Join(rel, name), name); err != nil {
			return err
		}
	}
	return s.entry(int(dir.Fd()), rel, st)
}

// child shifts one entry of a directory (a subdirectory with everything in
// it), reached by an O_PATH descriptor that does not follow a symbolic
// link and does not open a device or FIFO.
func (s *shifter) child(dirFd int, rel, name string) error {
	fd, err := unix.Openat(dirFd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: s.path(rel), Err: err}
	}
	defer unix.Close(fd)
	var st unix.Statx_t
	if err := statFd(fd, &st); err != nil {
		return &os.PathError{Op: "statx", Path: s.path(rel), Err: err}
	}
	if mountOf(&st) != s.mnt {
		s.rep.Mounts = append(s.rep.Mounts, rel)
		return nil
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return s.entry(fd, rel, &st)
	}
	// The O_PATH descriptor names this very directory: no second lookup.
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: s.path(rel), Err: err}
	}
	d := os.NewFile(uintptr(dfd), rel)
	defer d.Close()
	return s.dir(d, rel, &st)
}

func (s *shifter) path(rel string) string { return filepath.Join(s.root, rel) }

// id maps one ID: from's range to to's; to's range stays (shifted already);
// anything else stays and is reported.
func (s *shifter) id(rel, kind string, x uint32) uint32 {
	switch {
	case x-s.from < Size:
		return x - s.from + s.to
	case x-s.to < Size:
		return x
	}
	s.rep.Outside++
	if len(s.rep.Examples) < maxExamples {
		s.rep.Examples = append(s.rep.Examples, fmt.Sprintf("%s: %s %d", s.path(rel), kind, x))
	}
	return x
}

// entry shifts one file through fd, a descriptor of it (O_PATH, or a
// directory's own): its owner, then its ACLs, its mode and its capability,
// in that order, because chown clears the set-ID bits and the capability.
func (s *shifter) entry(fd int, rel string, st *unix.Statx_t) error {
	s.rep.Entries++
	uid, gid := s.id(rel, "uid", st.Uid), s.id(rel, "gid", st.Gid)
	typ := uint32(st.Mode) & unix.S_IFMT
	proc := fmt.Sprintf("/proc/self/fd/%d", fd)
	key := fileKey{unix.Mkdev(st.Dev_major, st.Dev_minor), st.Ino}
	saved, journaled := s.j.saved[key]
	if !journaled {
		saved.mode = uint32(st.Mode) & 0o7777
		if typ == unix.S_IFREG {
			var err error
			if saved.caps, err = getXattr(proc, xattrCaps); err != nil {
				return &os.PathError{Op: "getxattr " + xattrCaps, Path: s.path(rel), Err: err}
			}
		}
	}
	chowned := uid != st.Uid || gid != st.Gid
	if chowned {
		if !journaled && (saved.mode&(unix.S_ISUID|unix.S_ISGID) != 0 || saved.caps != nil) {
			if err := s.j.add(key, saved); err != nil {
				return fmt.Errorf("journal %s: %w", s.path(rel), err)
			}
		}
		if err := unix.Fchownat(fd, "", int(uid), int(gid), unix.AT_EMPTY_PATH); err != nil {
			return &os.PathError{Op: fmt.Sprintf("chown %d:%d", uid, gid), Path: s.path(rel), Err: err}
		}
		s.rep.Changed++
		if testHookAfterChown != nil {
			if err := testHookAfterChown(rel); err != nil {
				return err
			}
		}
	}
	if typ == unix.S_IFLNK {
		return nil // a symbolic link has no mode, ACL or capability of its own
	}
	if err := s.acls(proc, rel, typ == unix.S_IFDIR); err != nil {
		return err
	}
	if chowned || journaled {
		if err := s.restoreMode(fd, proc, rel, saved.mode); err != nil {
			return err
		}
	}
	return s.caps(proc, rel, saved.caps)
}

// acls shifts the IDs in a file's access ACL and, for a directory, its
// default ACL.
func (s *shifter) acls(proc, rel string, isDir bool) error {
	names := []string{xattrACLAccess}
	if isDir {
		names = append(names, xattrACLDefault)
	}
	for _, name := range names {
		b, err := getXattr(proc, name)
		if err != nil {
			return &os.PathError{Op: "getxattr " + name, Path: s.path(rel), Err: err}
		}
		if b == nil {
			continue
		}
		out, changed, err := shiftACL(b, func(x uint32) uint32 { return s.id(rel, "ACL entry", x) })
		if err != nil {
			return fmt.Errorf("%s: %s: %w", s.path(rel), name, err)
		}
		if !changed {
			continue
		}
		if err := unix.Setxattr(proc, name, out, 0); err != nil {
			return &os.PathError{Op: "setxattr " + name, Path: s.path(rel), Err: err}
		}
	}
	return nil
}

// restoreMode gives the file back the permission bits it had before its
// chown (the set-ID bits, which chown clears).
func (s *shifter) restoreMode(fd int, proc, rel string, mode uint32) error {
	var st unix.Statx_t
	if err := statFd(fd, &st); err != nil {
		return &os.PathError{Op: "statx", Path: s.path(rel), Err: err}
	}
	if uint32(st.Mode)&0o7777 == mode {
		return nil
	}
	// chmod through the descriptor's /proc link: fchmod does not take an
	// O_PATH descriptor, and the link leads to this inode, not a name.
	if err := unix.Chmod(proc, mode); err != nil {
		return &os.PathError{Op: fmt.Sprintf("chmod %o", mode), Path: s.path(rel), Err: err}
	}
	return nil
}

// caps writes the file's capability back, its root ID shifted, unless it
// is there already: chown dropped it, or it was shifted before.
func (s *shifter) caps(proc, rel string, orig []byte) error {
	if orig == nil {
		return nil
	}
	want, err := shiftCaps(orig, func(x uint32) uint32 { return s.id(rel, "capability root", x) })
	if err != nil {
		return fmt.Errorf("%s: %s: %w", s.path(rel), xattrCaps, err)
	}
	have, err := getXattr(proc, xattrCaps)
	if err != nil {
		return &os.PathError{Op: "getxattr " + xattrCaps, Path: s.path(rel), Err: err}
	}
	if bytes.Equal(have, want) {
		return nil
	}
	if err := unix.Setxattr(proc, xattrCaps, want, 0); err != nil {
		return &os.PathError{Op: "setxattr " + xattrCaps, Path: s.path(rel), Err: err}
	}
	return nil
}

// getXattr reads an extended attribute through a path that is followed (a
// descriptor's /proc link); nil when the file has none or its filesystem
// keeps none.
func getXattr(path, name string) ([]byte, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Getxattr(path, name, buf)
		switch {
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
			return nil, nil
		case errors.Is(err, unix.ERANGE) && size < 1<<17: // values end at 64 KiB
			continue
		case err != nil:
			return nil, err
		}
		return buf[:n], nil
	}
}
