package safecopy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxDepth bounds how deep a copy descends (systemd's copy.c has the same
// safety net against a tree that loops through mounts).
const maxDepth = 2048

// copier is one copy's walk: from a source directory descriptor and name to
// a destination directory descriptor and name, each entry below reached from
// its parent's descriptor, never by a path.
type copier struct {
	ctx     context.Context
	g       *Guest
	toGuest bool // the destination is the machine (copy-to)
	opt     Options
	sum     *Summary
	// dstTop is the directory the copy's top entry lands in; links maps a
	// source inode with more than one link to the first copy's path
	// relative to it, so the others become hard links again.
	dstTop int
	links  map[fileKey]string
	mv     mover
}

type fileKey struct{ dev, ino uint64 }

// testHook, when set, runs before each source entry is opened (at "open")
// and once it was opened and checked (at "stat"): tests swap, remove or
// truncate what is at its name there.
var testHook func(at, srcPath string)

// where names a source or destination path for messages: "web:/etc/x"
// inside the machine, the path itself on the host.
func (c *copier) where(guest bool, p string) string {
	if guest {
		return c.g.Name + ":" + p
	}
	return p
}

func (c *copier) srcWhere(p string) string { return c.where(!c.toGuest, p) }
func (c *copier) dstWhere(p string) string { return c.where(c.toGuest, p) }

// node is one entry being copied: where it is on both sides.
type node struct {
	srcDir  int
	name    string
	srcPath string // for messages
	dstDir  int
	dname   string
	dstPath string // for messages
	dstRel  string // relative to copier.dstTop
	depth   int
}

func (n node) child(srcDir, dstDir int, name string) node {
	return node{srcDir: srcDir, name: name, srcPath: path.Join(n.srcPath, name), dstDir: dstDir, dname: name,
		dstPath: path.Join(n.dstPath, name), dstRel: path.Join(n.dstRel, name), depth: n.depth + 1}
}

// entry copies one entry of any type.
func (c *copier) entry(n node) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if testHook != nil {
		testHook("open", n.srcPath)
	}
	// O_PATH with O_NOFOLLOW opens the entry itself, whatever it is, without
	// opening it: no FIFO blocks, no device is touched, a symbolic link is
	// the link.
	fd, err := unix.Openat(n.srcDir, n.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) && n.depth > 0 {
			return fmt.Errorf("%s: vanished while it was copied", c.srcWhere(n.srcPath))
		}
		return &os.PathError{Op: "open", Path: c.srcWhere(n.srcPath), Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "stat", Path: c.srcWhere(n.srcPath), Err: err}
	}
	if testHook != nil {
		testHook("stat", n.srcPath)
	}
	kind := st.Mode & unix.S_IFMT
	if !c.toGuest && (kind == unix.S_IFDIR || kind == unix.S_IFREG) {
		if fs := kernelFS(fd); fs != "" {
			if n.depth == 0 {
				return fmt.Errorf("%s is on %s, a kernel filesystem: berth copies only ordinary files", c.srcWhere(n.srcPath), fs)
			}
			c.skip(n.srcPath, "on "+fs+", a kernel filesystem")
			return nil
		}
	}
	switch kind {
	case unix.S_IFDIR:
		return c.dir(fd, &st, n)
	case unix.S_IFREG:
		return c.file(fd, &st, n)
	case unix.S_IFLNK:
		return c.symlink(fd, &st, n)
	}
	c.skip(n.srcPath, kindName(kind)+": only regular files' contents are copied")
	return nil
}

func (c *copier) skip(p, why string) {
	c.sum.Skipped = append(c.sum.Skipped, Skip{Path: c.srcWhere(p), Reason: why})
}

func kindName(k uint32) string {
	switch k {
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symbolic link"
	}
	return "file"
}

// reopen opens the inode an O_PATH descriptor holds, through its
// /proc/self/fd link: the very inode that was checked, whatever has been
// renamed or swapped at its name since.
func reopen(fd, flags int) (int, error) {
	return unix.Open("/proc/self/fd/"+strconv.Itoa(fd), flags|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
}

// owner maps a source owner to the destination's.
func (c *copier) owner(st *unix.Stat_t) (uid, gid int) {
	m := c.g.guestToHost
	if c.toGuest {
		m = c.g.hostToGuest
	}
	u, uok := m(st.Uid)
	g, gok := m(st.Gid)
	if !uok || !gok {
		c.sum.Nobody++
	}
	return int(u), int(g)
}

// existing looks at what is at the destination name: nil when nothing,
// else its stat. An existing directory conflicts with a file and the other
// way round; an existing file without Force is an error.
func (c *copier) existing(n node, wantDir bool) (*unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(n.dstDir, n.dname, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "stat", Path: c.dstWhere(n.dstPath), Err: err}
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	switch {
	case isDir && !wantDir:
		return nil, fmt.Errorf("%s is a directory: it is never replaced by a file; remove it first", c.dstWhere(n.dstPath))
	case !isDir && wantDir:
		return nil, fmt.Errorf("%s exists and is a %s, not a directory: remove it first", c.dstWhere(n.dstPath), kindName(st.Mode&unix.S_IFMT))
	case !isDir && !c.opt.Force:
		return nil, fmt.Errorf("%s exists: use --force to replace it", c.dstWhere(n.dstPath))
	}
	return &st, nil
}

// dir copies a directory and what is in it. A directory that exists at the
// destination is merged into, its own owner, mode and times kept; a new one
// is made 0700 and gets the source's once it is filled.
func (c *copier) dir(fd int, st *unix.Stat_t, n node) error {
	if n.depth >= maxDepth {
		return fmt.Errorf("%s: more than %d directories deep", c.srcWhere(n.srcPath), maxDepth)
	}
	src, err := reopen(fd, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return &os.PathError{Op: "open", Path: c.srcWhere(n.srcPath), Err: err}
	}
	srcDir := os.NewFile(uintptr(src), n.srcPath)
	defer srcDir.Close()
	old, err := c.existing(n, true)
	if err != nil {
		return err
	}
	if old == nil {
		if err := unix.Mkdirat(n.dstDir, n.dname, 0o700); err != nil {
			return &os.PathError{Op: "mkdir", Path: c.dstWhere(n.dstPath), Err: err}
		}
	}
	dst, err := unix.Openat(n.dstDir, n.dname, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: c.dstWhere(n.dstPath), Err: err}
	}
	defer unix.Close(dst)
	if c.toGuest && old != nil {
		if fs := kernelFS(dst); fs != "" {
			return fmt.Errorf("%s is on %s, a kernel filesystem: berth writes only to ordinary files", c.dstWhere(n.dstPath), fs)
		}
	}
	if old == nil {
		uid, gid := c.owner(st)
		if err := unix.Fchown(dst, uid, gid); err != nil {
			return &os.PathError{Op: "chown", Path: c.dstWhere(n.dstPath), Err: err}
		}
	}
	for {
		names, err := srcDir.Readdirnames(1024)
		for _, name := range names {
			if err := c.entry(n.child(src, dst, name)); err != nil {
				return err
			}
		}
		if err != nil || len(names) == 0 {
			break
		}
	}
	if old == nil {
		if err := unix.Fchmod(dst, st.Mode&0o7777); err != nil {
			return &os.PathError{Op: "chmod", Path: c.dstWhere(n.dstPath), Err: err}
		}
		if err := setTimes(dst, st); err != nil {
			return &os.PathError{Op: "utimes", Path: c.dstWhere(n.dstPath), Err: err}
		}
	}
	c.sum.Dirs++
	return nil
}

// setTimes gives the open file fd the access and modification times of st.
func setTimes(fd int, st *unix.Stat_t) error {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), ts, 0)
}

// file copies a regular file: to a temporary name in the destination
// directory, owner, mode and times set, then renamed over the name, so that
// a failure (a full disk, a file that shrank) leaves no half file there.
func (c *copier) file(fd int, st *unix.Stat_t, n node) error {
	if _, err := c.existing(n, false); err != nil {
		return err
	}
	key := fileKey{st.Dev, st.Ino}
	if st.Nlink > 1 {
		if rel, ok := c.links[key]; ok && c.link(rel, n) == nil {
			c.sum.Hardlinks++
			return nil
		}
	}
	src, err := reopen(fd, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return &os.PathError{Op: "open", Path: c.srcWhere(n.srcPath), Err: err}
	}
	defer unix.Close(src)
	tmp, dst, err := createTemp(n.dstDir, n.dname)
	if err != nil {
		return &os.PathError{Op: "create", Path: c.dstWhere(n.dstPath), Err: err}
	}
	err = c.fill(dst, src, st, n)
	if cerr := unix.Close(dst); err == nil && cerr != nil {
		err = &os.PathError{Op: "close", Path: c.dstWhere(n.dstPath), Err: cerr}
	}
	if err == nil {
		err = c.place(n, tmp)
	}
	if err != nil {
		_ = unix.Unlinkat(n.dstDir, tmp, 0)
		return err
	}
	if st.Nlink > 1 {
		c.links[key] = n.dstRel
	}
	c.sum.Files++
	c.sum.Bytes += st.Size
	return nil
}

// fill writes the temporary file dst: the contents of src, then owner, mode
// and times.
func (c *copier) fill(dst, src int, st *unix.Stat_t, n node) error {
	if err := c.mv.copyData(c.ctx, dst, src, st.Size); err != nil {
		if errors.Is(err, errShrank) {
			return fmt.Errorf("%s: %w", c.srcWhere(n.srcPath), err)
		}
		return fmt.Errorf("copy %s to %s: %w", c.srcWhere(n.srcPath), c.dstWhere(n.dstPath), err)
	}
	uid, gid := c.owner(st)
	if err := unix.Fchown(dst, uid, gid); err != nil {
		return &os.PathError{Op: "chown", Path: c.dstWhere(n.dstPath), Err: err}
	}
	mode := st.Mode & 0o7777
	if !c.toGuest && mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		// A set-ID program a guest made never becomes one on the host.
		mode &^= unix.S_ISUID | unix.S_ISGID
		c.sum.SetIDCleared++
	}
	if err := unix.Fchmod(dst, mode); err != nil {
		return &os.PathError{Op: "chmod", Path: c.dstWhere(n.dstPath), Err: err}
	}
	if err := setTimes(dst, st); err != nil {
		return &os.PathError{Op: "utimes", Path: c.dstWhere(n.dstPath), Err: err}
	}
	return nil
}

// place renames the temporary tmp to the entry's name: over an existing
// file with Force, else only where nothing is (RENAME_NOREPLACE), so that a
// file made there meanwhile is not lost.
func (c *copier) place(n node, tmp string) error {
	var flags uint
	if !c.opt.Force {
		flags = unix.RENAME_NOREPLACE
	}
	err := unix.Renameat2(n.dstDir, tmp, n.dstDir, n.dname, flags)
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%s exists: use --force to replace it", c.dstWhere(n.dstPath))
	}
	if err != nil {
		return &os.PathError{Op: "rename", Path: c.dstWhere(n.dstPath), Err: err}
	}
	return nil
}

// link makes the entry a hard link to the copy at rel (relative to dstTop),
// reached without following any symbolic link or leaving dstTop.
func (c *copier) link(rel string, n node) error {
	dir, base := path.Split(rel)
	if dir == "" {
		dir = "."
	}
	pd, err := unix.Openat2(c.dstTop, dir, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV})
	if err != nil {
		return err
	}
	defer unix.Close(pd)
	tmp := tempName(n.dname)
	if err := unix.Linkat(pd, base, n.dstDir, tmp, 0); err != nil {
		return err // another filesystem (EXDEV): the caller copies instead
	}
	if err := c.place(n, tmp); err != nil {
		_ = unix.Unlinkat(n.dstDir, tmp, 0)
		return err
	}
	return nil
}

// symlink copies a symbolic link as a link: its target is text, never
// followed.
func (c *copier) symlink(fd int, st *unix.Stat_t, n node) error {
	if _, err := c.existing(n, false); err != nil {
		return err
	}
	buf := make([]byte, unix.PathMax)
	k, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return &os.PathError{Op: "readlink", Path: c.srcWhere(n.srcPath), Err: err}
	}
	tmp := tempName(n.dname)
	if err := unix.Symlinkat(string(buf[:k]), n.dstDir, tmp); err != nil {
		return &os.PathError{Op: "symlink", Path: c.dstWhere(n.dstPath), Err: err}
	}
	err = c.linkMeta(n, tmp, st)
	if err == nil {
		err = c.place(n, tmp)
	}
	if err != nil {
		_ = unix.Unlinkat(n.dstDir, tmp, 0)
		return err
	}
	c.sum.Symlinks++
	return nil
}

// linkMeta sets the new link tmp's owner and times (its mode means nothing).
func (c *copier) linkMeta(n node, tmp string, st *unix.Stat_t) error {
	uid, gid := c.owner(st)
	if err := unix.Fchownat(n.dstDir, tmp, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "chown", Path: c.dstWhere(n.dstPath), Err: err}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(n.dstDir, tmp, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimes", Path: c.dstWhere(n.dstPath), Err: err}
	}
	return nil
}

// tempName is a name for a file being made in place of name: hidden, unique,
// within NAME_MAX.
func tempName(name string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	if len(name) > 200 {
		name = name[:200]
	}
	return ".#berth." + name + "." + hex.EncodeToString(b[:])
}

// createTemp makes a new file in dir for name, open for writing, owned by the
// thread's filesystem IDs and private until its mode is set.
func createTemp(dir int, name string) (string, int, error) {
	for range 8 {
		tmp := tempName(name)
		fd, err := unix.Openat(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		return tmp, fd, err
	}
	return "", -1, unix.EEXIST
}

// kernelFS names the kernel filesystem fd is on (proc, sysfs, …), or "" for
// an ordinary one. Reading or writing such files as the host's root would be
// acting on the host's kernel, whatever machine mounted them.
func kernelFS(fd int) string {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return "an unknown filesystem"
	}
	return kernelFSNames[int64(sfs.Type)]
}

var kernelFSNames = map[int64]string{
	unix.PROC_SUPER_MAGIC:    "proc",
	unix.SYSFS_MAGIC:         "sysfs",
	unix.CGROUP_SUPER_MAGIC:  "cgroup",
	unix.CGROUP2_SUPER_MAGIC: "cgroup2",
	unix.DEBUGFS_MAGIC:       "debugfs",
	unix.TRACEFS_MAGIC:       "tracefs",
	unix.SECURITYFS_MAGIC:    "securityfs",
	unix.BPF_FS_MAGIC:        "bpf",
	unix.DEVPTS_SUPER_MAGIC:  "devpts",
	unix.NSFS_MAGIC:          "nsfs",
	unix.EFIVARFS_MAGIC:      "efivarfs",
	unix.PSTOREFS_MAGIC:      "pstore",
	unix.SELINUX_MAGIC:       "selinuxfs",
	unix.SMACK_MAGIC:         "smackfs",
	unix.BINFMTFS_MAGIC:      "binfmt_misc",
	unix.FUSE_SUPER_MAGIC:    "fuse",
	0x65735543:               "fusectl",
	0x62656570:               "configfs",
	0x19800202:               "mqueue",
}
