package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/berthd/berth/internal/rundir"

	"golang.org/x/sys/unix"
)

// The machine's tree is built by the supervisor, as host root, in a mount
// namespace of its own (M0), on the supervisor's locked thread: the root (an
// overlay over idmapped layers, or an idmapped bind of a directory), /dev with
// real device nodes, /run, /tmp, /run/host, /proc of the machine's PID
// namespace with its masks, /sys of its network namespace, and the
// definition's mounts. The init stage was cloned from that thread without a
// mount namespace of its own; once released it unshares one (M1), a copy of
// M0 that belongs to its user namespace, so that every mount built here is
// locked in it: a guest root cannot unmount or remount any of them
// (docs/runtime.md, "Private users"). Mounts that belong to the machine's
// own namespaces (cgroup2, devpts, mqueue) are made by the init stage.

// enterM0 gives the calling (locked) thread a fresh mount namespace of its
// own, a slave copy of the host's: mounts made in it never reach the host,
// and nothing built for an earlier boot is in it.
func (s *supervisor) enterM0() error {
	if s.hostMnt < 0 {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("unshare the filesystem context: %w", err)
		}
		fd, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("the host's mount namespace: %w", err)
		}
		s.hostMnt = fd
	} else if err := unix.Setns(s.hostMnt, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("back to the host's mount namespace: %w", err)
	}
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("a mount namespace for the machine's tree: %w", err)
	}
	return mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, "")
}

// leaveM0 returns the thread to the host's mount namespace, so the tree of
// the boot that ended is freed with the last process that held it.
func (s *supervisor) leaveM0() {
	if s.hostMnt >= 0 {
		_ = unix.Setns(s.hostMnt, unix.CLONE_NEWNS)
	}
}

// tree is one boot's build of the machine's tree.
type tree struct {
	cfg    Config
	root   string // where the root is attached in M0
	pid    int    // the init stage, on the host
	userns int    // its user namespace; -1 without Users
	uid    uint32 // the machine's root on the host
	// upper and work are an ephemeral root's, on this boot's tmpfs.
	upper, work string
	creds       []credential
}

// mountScratch mounts an ephemeral root's tmpfs in M0 and makes its upper
// and work directories, owned by the host's root as an upper directory on
// disk is (the idmapped bind of it maps them into the machine's range), or by
// the machine's root when the range is shifted instead. The tmpfs is charged
// to the machine's memory cgroup as the guest fills it; it is freed when the
// last mount namespace holding it goes, whatever way the boot ends.
func (t *tree) mountScratch() error {
	o := t.cfg.Root.Overlay
	if o == nil || o.Scratch == 0 {
		return nil
	}
	dir := rundir.Dir(t.cfg.RuntimeDir).Scratch()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ephemeral root: %w", err)
	}
	if err := mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", o.Scratch)); err != nil {
		return fmt.Errorf("ephemeral root: tmpfs of %d bytes: %w", o.Scratch, err)
	}
	owner := 0
	if u := t.cfg.Users; u != nil && u.Shifted {
		owner = int(u.Base)
	}
	t.upper, t.work = filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{t.upper, t.work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("ephemeral root: %w", err)
		}
		if err := os.Lchown(d, owner, owner); err != nil {
			return fmt.Errorf("ephemeral root: %w", err)
		}
	}
	if o.Seed != "" {
		if err := copySeed(o.Seed, t.upper, owner); err != nil {
			return fmt.Errorf("ephemeral root: seed %s: %w", o.Seed, err)
		}
	}
	return nil
}

// copySeed copies the tree seed (berth's own files, on the host) onto an
// ephemeral root's upper directory: directories, regular files and symbolic
// links, with their modes and owners shifted by base (the range's first ID
// when the range is shifted, else 0).
func copySeed(seed, upper string, base int) error {
	return filepath.Walk(seed, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == seed {
			return err
		}
		rel, err := filepath.Rel(seed, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(upper, rel)
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no owner", p)
		}
		uid, gid := base+int(st.Uid), base+int(st.Gid)
		switch {
		case fi.IsDir():
			err = os.Mkdir(dst, fi.Mode().Perm())
		case fi.Mode().IsRegular():
			var b []byte
			if b, err = os.ReadFile(p); err == nil {
				err = os.WriteFile(dst, b, fi.Mode().Perm())
			}
		case fi.Mode()&os.ModeSymlink != 0:
			var to string
			if to, err = os.Readlink(p); err == nil {
				err = os.Symlink(to, dst)
			}
		default:
			return nil
		}
		if err != nil {
			return err
		}
		if err := os.Lchown(dst, uid, gid); err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return os.Chmod(dst, fi.Mode()&(os.ModePerm|os.ModeSticky|os.ModeSetuid|os.ModeSetgid))
		}
		return nil
	})
}

// buildTree builds the machine's tree for the init stage pid and returns an
// O_PATH descriptor of its root, for the init stage to move into.
func (s *supervisor) buildTree(pid int) (*os.File, error) {
	t := &tree{cfg: s.cfg, root: rundir.Dir(s.cfg.RuntimeDir).RootMount(), pid: pid, userns: -1, creds: s.creds}
	if u := s.cfg.Users; u != nil {
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("the machine's user namespace: %w", err)
		}
		defer unix.Close(fd)
		t.userns, t.uid = fd, u.Base
		if err := makeLayerDirs(s.cfg); err != nil {
			return nil, err
		}
	}
	if err := makeBindStages(s.cfg); err != nil {
		return nil, err
	}
	if err := t.mountScratch(); err != nil {
		return nil, err
	}
	var err error
	asUser(t.uid, func() { err = t.build() })
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(t.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the machine's root: %w", err)
	}
	return os.NewFile(uintptr(fd), "root"), nil
}

func (t *tree) build() error {
	if err := t.mountRoot(); err != nil {
		return err
	}
	if err := setupDev(t.cfg, t.root, t.uid); err != nil {
		return err
	}
	run, err := setupRun(t.cfg, t.root, t.uid, t.creds)
	if err != nil {
		return err
	}
	if err := t.mountProc(); err != nil {
		return err
	}
	if err := setupProc(t.cfg, t.root, run); err != nil {
		return err
	}
	if err := t.mountSys(); err != nil {
		return err
	}
	if err := maskPaths(t.cfg, t.root, run); err != nil {
		return err
	}
	for i, m := range t.cfg.Mounts {
		if err := t.userMount(i, m); err != nil {
			return fmt.Errorf("mounts[%d] (%s on %s): %w", i, m.Type, m.Target, err)
		}
	}
	if t.cfg.Root.ReadOnly {
		if err := unix.MountSetattr(unix.AT_FDCWD, t.root, 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return fmt.Errorf("read-only root: %w", err)
		}
	}
	return nil
}

// asUser runs fn with the calling thread's filesystem IDs set to uid (the
// machine's root on the host) and its capabilities kept
// (SECBIT_NO_SETUID_FIXUP): what it creates in the machine's idmapped root or
// in its tmpfs mounts then belongs to the machine's root, and the overlay
// records that mounter. Only this thread changes: raw system calls, not the
// all-threads wrappers.
func asUser(uid uint32, fn func()) {
	if uid == 0 {
		fn()
		return
	}
	const secbitNoSetuidFixup = 1 << 2
	_, _, _ = unix.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, secbitNoSetuidFixup, 0)
	_, _, _ = unix.RawSyscall(unix.SYS_SETFSGID, uintptr(uid), 0, 0)
	_, _, _ = unix.RawSyscall(unix.SYS_SETFSUID, uintptr(uid), 0, 0)
	defer func() {
		_, _, _ = unix.RawSyscall(unix.SYS_SETFSUID, 0, 0, 0)
		_, _, _ = unix.RawSyscall(unix.SYS_SETFSGID, 0, 0, 0)
		_, _, _ = unix.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, 0, 0)
	}()
	fn()
}

// mountRoot attaches the machine's root at t.root: the overlay over its
// layers, or a bind of its directory; idmapped into the machine's range
// unless the root was shifted on disk.
func (t *tree) mountRoot() error {
	idmap := t.userns >= 0 && !t.cfg.Users.Shifted
	o := t.cfg.Root.Overlay
	if o == nil {
		return t.bind(t.cfg.Root.Dir, t.root, idmap, 0)
	}
	lower, upper, work := o.Lower, o.Upper, o.Work
	if o.Scratch > 0 {
		upper, work = t.upper, t.work
	}
	if idmap {
		// Each layer is an idmapped clone attached in M0 (which nobody else
		// sees), and overlayfs is mounted over those: Linux 5.19.
		layers := rundir.Dir(t.cfg.RuntimeDir).Layers()
		lower = nil
		for i, l := range o.Lower {
			at := filepath.Join(layers, strconv.Itoa(i))
			if err := t.bind(l, at, true, unix.MOUNT_ATTR_RDONLY); err != nil {
				return fmt.Errorf("image layer %s: %w", l, err)
			}
			lower = append(lower, at)
		}
		if filepath.Dir(upper) != filepath.Dir(work) {
			return fmt.Errorf("overlay root: upper %s and work %s must be in one directory to be idmapped", upper, work)
		}
		state := filepath.Join(layers, "state")
		if err := t.bind(filepath.Dir(upper), state, true, 0); err != nil {
			return fmt.Errorf("the machine's layer: %w", err)
		}
		upper, work = filepath.Join(state, filepath.Base(upper)), filepath.Join(state, filepath.Base(work))
	}
	if err := mountOverlay(t.root, lower, upper, work); err != nil {
		return fmt.Errorf("overlay root: %w", err)
	}
	return nil
}

// makeLayerDirs makes the mount points of an overlay root's idmapped layers
// in the runtime directory, owned by the host's root (the tree is built with
// the machine's IDs).
func makeLayerDirs(cfg Config) error {
	if cfg.Root.Overlay == nil || cfg.Users.Shifted {
		return nil
	}
	layers := rundir.Dir(cfg.RuntimeDir).Layers()
	for i := range cfg.Root.Overlay.Lower {
		if err := os.MkdirAll(filepath.Join(layers, strconv.Itoa(i)), 0o700); err != nil {
			return err
		}
	}
	return os.MkdirAll(filepath.Join(layers, "state"), 0o700)
}

// bind attaches a recursive clone of src at dst, idmapped
// into the machine's range when idmap, with attr set (MOUNT_ATTR_RDONLY …)
// on it and every mount below it.
func (t *tree) bind(src, dst string, idmap bool, attr uint64) error {
	userns := -1
	if idmap {
		userns = t.userns
	}
	fd, err := cloneTree(src, userns, attr, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach %s on %s: %w", src, dst, err)
	}
	return nil
}

// cloneTree returns a detached recursive clone of src (attached nowhere yet),
// idmapped into the user namespace userns unless it is -1, with attr set
// (MOUNT_ATTR_RDONLY …) on it and every mount below it, and their
// propagation changed to propagation (unix.MS_PRIVATE …) unless it is 0.
func cloneTree(src string, userns int, attr, propagation uint64) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("clone %s: %w", src, err)
	}
	ma := &unix.MountAttr{Attr_set: attr, Propagation: propagation}
	if userns >= 0 {
		ma.Attr_set |= unix.MOUNT_ATTR_IDMAP
		ma.Userns_fd = uint64(userns)
	}
	if ma.Attr_set != 0 || propagation != 0 {
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, ma); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("%s: %w", idmapError(src, userns >= 0), err)
		}
	}
	return fd, nil
}

// idmapError says what failed setting a clone's attributes.
func idmapError(src string, idmap bool) string {
	if !idmap {
		return "mount attributes of " + src
	}
	var st unix.Statfs_t
	_ = unix.Statfs(src, &st)
	return fmt.Sprintf("idmap %s (filesystem type %#x; idmapped mounts need Linux 5.12 and a filesystem that supports them)", src, st.Type)
}

// mountProc mounts the /proc of the machine's PID namespace at the root's
// /proc. proc takes the PID namespace of the process that mounts it, so a
// helper forked from this thread after it joined the machine's PID namespace
// for its children does the mount (mountProcAt): it is in M0, with host
// credentials, and the guest's init has not run yet.
func (t *tree) mountProc() error {
	proc, err := mkdirIn(t.root, "/proc", 0o555)
	if err != nil {
		return err
	}
	back, err := t.joinNS("pid_for_children", "pid", unix.CLONE_NEWPID, "PID")
	if err != nil {
		return err
	}
	defer back()
	if err := mountProcAt(proc); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	return nil
}

// mountSys mounts /sys read-only for the machine's network namespace (sysfs
// shows the mounter's), joining it for the one call.
func (t *tree) mountSys() error {
	if t.cfg.NetworkMode != "private" {
		return setupSys(t.root)
	}
	back, err := t.joinNS("net", "net", unix.CLONE_NEWNET, "network")
	if err != nil {
		return err
	}
	defer back()
	return setupSys(t.root)
}

// mustSetns returns the supervisor's thread to the host's namespace it
// joined another of for one step. Were that to fail, everything the
// supervisor does next would happen in the machine's namespace: stop.
// joinNS moves the supervisor's thread into the machine's namespace of one
// type (own: the thread's link for it, theirs: PID 1's) and returns what
// brings it back to the host's; a failure to come back panics (mustSetns).
func (t *tree) joinNS(own, theirs string, nstype int, what string) (back func(), err error) {
	host, err := unix.Open("/proc/thread-self/ns/"+own, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("the host's %s namespace: %w", what, err)
	}
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", t.pid, theirs), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Setns(ns, nstype)
		unix.Close(ns)
	}
	if err != nil {
		unix.Close(host)
		return nil, fmt.Errorf("join the machine's %s namespace: %w", what, err)
	}
	return func() { mustSetns(host, nstype, what); unix.Close(host) }, nil
}

func mustSetns(fd, nstype int, what string) {
	if err := unix.Setns(fd, nstype); err != nil {
		panic(fmt.Sprintf("berth: cannot return the supervisor to the host's %s namespace: %v", what, err))
	}
}

// userMount makes one of the definition's binds at its stage outside the
// root (idmapped when asked and the machine has a range of its own,
// read-only with every mount below it when asked); attachBinds puts it in
// place. tmpfs mounts are the init stage's (mountOwn).
//
// Why the detour: a bind made here and copied into the init stage's mount
// namespace is locked there as a whole, so the guest could not unmount it at
// shutdown (systemd's "Failed unmounting"). A clone of the locked copy, made
// in that namespace, is not locked at its top, so the guest may unmount it,
// but keeps the locks on its flags: a read-only bind stays read-only.
func (t *tree) userMount(i int, m Mount) error {
	if m.Type == "tmpfs" {
		return nil
	}
	// The mount point is made now, while the root may still be written
	// (a read-only root is made so at the end of build), and found again by
	// attachBind.
	st, err := os.Stat(m.Source)
	if err != nil {
		return err
	}
	if _, err := t.mountPoint(m.Target, st.IsDir()); err != nil {
		return err
	}
	stage := rundir.Dir(t.cfg.RuntimeDir).BindStage(i)
	idmap := m.Idmap && t.userns >= 0
	if idmap && m.ReadOnly {
		return t.bind(m.Source, stage, true, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	}
	if err := t.bind(m.Source, stage, idmap, 0); err != nil {
		return err
	}
	if m.ReadOnly {
		return readOnlyRec(stage)
	}
	return nil
}

// makeBindStages makes an empty mount point for each bind (a directory or a
// file, as its source is) under the runtime directory, as host root.
func makeBindStages(cfg Config) error {
	d := rundir.Dir(cfg.RuntimeDir)
	removeBindStages(d)
	if !hasBind(cfg.Mounts) {
		return nil
	}
	if err := os.MkdirAll(d.BindStages(), 0o700); err != nil {
		return err
	}
	for i, m := range cfg.Mounts {
		if m.Type != "bind" {
			continue
		}
		st, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("mounts[%d] (bind on %s): %w", i, m.Target, err)
		}
		if st.IsDir() {
			err = os.Mkdir(d.BindStage(i), 0o700)
		} else {
			err = os.WriteFile(d.BindStage(i), nil, 0o600)
		}
		if err != nil {
			return fmt.Errorf("mounts[%d] (bind on %s): %w", i, m.Target, err)
		}
	}
	return nil
}

// removeBindStages removes the stages' mount points (empty on the host: the
// binds on them were only ever in a mount namespace that is gone).
func removeBindStages(d rundir.Dir) {
	ents, _ := os.ReadDir(d.BindStages())
	for _, e := range ents {
		_ = os.Remove(filepath.Join(d.BindStages(), e.Name()))
	}
	_ = os.Remove(d.BindStages())
}

func hasBind(ms []Mount) bool {
	for _, m := range ms {
		if m.Type == "bind" {
			return true
		}
	}
	return false
}

// attachBinds puts each staged bind in place, in the mount namespace the init
// stage has just made its own (a copy of M0 in which the stages are locked):
// on the supervisor's thread, as host root, it clones each stage there and
// attaches the clone at its target, resolved inside the root and made (as the
// machine's root) when missing, in the definition's order, so a bind below
// another lands in it. The init stage's root clone then carries them.
func (s *supervisor) attachBinds(pid int) error {
	if !hasBind(s.cfg.Mounts) {
		return nil
	}
	t := &tree{cfg: s.cfg, root: rundir.Dir(s.cfg.RuntimeDir).RootMount(), pid: pid}
	if u := s.cfg.Users; u != nil {
		t.uid = u.Base
	}
	back, err := t.joinNS("mnt", "mnt", unix.CLONE_NEWNS, "mount")
	if err != nil {
		return err
	}
	defer back()
	for i, m := range s.cfg.Mounts {
		if m.Type != "bind" {
			continue
		}
		if err := t.attachBind(i, m); err != nil {
			return fmt.Errorf("mounts[%d] (bind on %s): %w", i, m.Target, err)
		}
	}
	return nil
}

func (t *tree) attachBind(i int, m Mount) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, rundir.Dir(t.cfg.RuntimeDir).BindStage(i), unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("clone the staged bind: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	target, err := t.mountPoint(m.Target, isDir)
	if err != nil {
		return err
	}
	if tst, err := os.Stat(target); err == nil && tst.IsDir() != isDir {
		return fmt.Errorf("cannot bind a %s on a %s", map[bool]string{true: "directory", false: "file"}[isDir], kindOf(tst))
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach on %s: %w", target, err)
	}
	return nil
}

// mountPoint makes (or finds) the mount point of a bind at target in the
// root, a directory or a file as its source is, owned by the machine's root.
func (t *tree) mountPoint(target string, isDir bool) (string, error) {
	var p string
	var err error
	asUser(t.uid, func() {
		if isDir {
			p, err = mkdirIn(t.root, target, 0o755)
		} else {
			p, err = touchIn(t.root, target)
		}
	})
	return p, err
}

// removeEmptyTree removes dir and the empty directories below it (mount
// points that were only ever used in a mount namespace that is gone).
func removeEmptyTree(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			removeEmptyTree(filepath.Join(dir, e.Name()))
		}
	}
	_ = unix.Rmdir(dir)
}
