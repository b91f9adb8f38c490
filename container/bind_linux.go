package container

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/berthd/berth/internal/rundir"

	"golang.org/x/sys/unix"
)

// Binds into a running machine arrive the way systemd-nspawn lets them in
// (its setup_propagate) and systemd-machined brings them (BindMountMachine,
// bind_mount_in_namespace in src/shared/mount-util.c), so that `machinectl
// bind` works on a berth machine as on an nspawn one:
//
//   - While the machine runs, the host has a propagation directory,
//     /run/systemd/nspawn/propagate/NAME, bound on itself as a mount of its
//     own in a peer group of its own (MS_SHARED).
//   - Each boot's tree (M0, a slave copy of the host's namespace) gets a bind
//     of it on /run/host/incoming, read-only and a slave of the host's, and
//     the init stage's namespace (M1) copies that as a slave too. A mount
//     made in the propagation directory on the host therefore appears in the
//     machine's /run/host/incoming, and nowhere else the guest can see.
//   - In a machine with private users M1 belongs to the machine's user
//     namespace, so what propagates into it arrives locked (CL_UNPRIVILEGED):
//     the guest's root can neither clear its read-only, nosuid or nodev nor
//     unmount what is mounted below it to see what it covers.
//   - The source's clone is private before it goes into the propagation
//     directory: on a systemd host its mounts are shared, and a clone stays
//     in their peer groups, so its unmount there would propagate to the
//     host's own mounts below the source.
//   - The mover, a thread of the supervisor in M1, clones the arrival (a
//     clone keeps the locks on the flags), makes the clone private and
//     attaches it at the target, which is resolved inside the machine's
//     root; then the host unmounts the propagation directory's copy, which
//     takes the arrivals with it and nothing else.
//
// systemd-machined 252 refuses BindMountMachine for a machine whose UIDs
// are shifted ("Can't bind mount on container with user namespacing
// applied"): machinectl bind works on machines with privateUsers: false;
// berth bind works on every machine.

// incomingDir is where binds arrive inside a machine.
const incomingDir = "run/host/incoming"

// setupPropagate makes the machine's propagation directory on the host
// (rundir.Propagate) and returns what removes it. Whatever an earlier
// supervisor of the machine that could not clean up left there goes first.
func setupPropagate(name string) (undo func(), err error) {
	RemovePropagation(name)
	p := rundir.Propagate(name)
	if err := os.MkdirAll(rundir.PropagateDir, 0o700); err != nil {
		return nil, fmt.Errorf("propagation directory: %w", err)
	}
	if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("propagation directory: %w", err)
	}
	undo = func() { RemovePropagation(name) }
	// Bound on itself, then out of whatever peer group the host's /run is in
	// (every mount is shared on a systemd host) and into one of its own: its
	// mounts propagate only to the machine's /run/host/incoming.
	for _, fl := range []uintptr{unix.MS_BIND, unix.MS_PRIVATE, unix.MS_SHARED} {
		src := ""
		if fl == unix.MS_BIND {
			src = p
		}
		if err := mount(src, p, "", fl, ""); err != nil {
			undo()
			return nil, fmt.Errorf("propagation directory: %w", err)
		}
	}
	return undo, nil
}

// RemovePropagation removes machine name's propagation directory on the
// host, and whatever is mounted on it and in it: when the machine stops,
// and before it starts after a supervisor that could not clean up.
func RemovePropagation(name string) {
	p := rundir.Propagate(name)
	for i := 0; i < 16 && unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW) == nil; i++ {
	}
	ents, _ := os.ReadDir(p)
	for _, e := range ents {
		removeArrival(filepath.Join(p, e.Name()))
	}
	_ = os.Remove(p)
}

// removeArrival unmounts one bind's mount point in the propagation
// directory (the unmount propagates: its copies in the machine go too) and
// removes it.
func removeArrival(p string) {
	for i := 0; i < 16 && unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW) == nil; i++ {
	}
	_ = os.Remove(p)
}

// mountIncoming binds the propagation directory, as this boot's tree sees
// it, on the tree's /run/host/incoming (at): read-only, and a slave, so that
// it receives the host's mounts there and nothing goes back (and so that
// machined's MS_MOVE out of it works: a mount cannot be moved off a shared
// parent).
func mountIncoming(name, at string) error {
	if err := mount(rundir.Propagate(name), at, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("/run/host/incoming: %w", err)
	}
	if err := mount("", at, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("/run/host/incoming: %w", err)
	}
	if err := mount("", at, "", unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("/run/host/incoming: %w", err)
	}
	return nil
}

// bind carries out a bind request: o.Source of the host on o.Target in the
// running machine.
func (s *supervisor) bind(o BindOptions) (*BindResult, error) {
	res, err := s.bindIn(o)
	if err != nil {
		return nil, fmt.Errorf("machine %q: bind %s on %s: %w", s.cfg.Name, o.Source, o.Target, err)
	}
	return res, nil
}

func (s *supervisor) bindIn(o BindOptions) (*BindResult, error) {
	if !filepath.IsAbs(o.Source) {
		return nil, errors.New("the source must be an absolute path")
	}
	if !filepath.IsAbs(o.Target) || filepath.Clean(o.Target) == "/" {
		return nil, errors.New("the target must be an absolute path in the machine, not /")
	}
	s.mu.Lock()
	leader, phase := s.leader, s.state.Phase
	s.mu.Unlock()
	if leader == nil || phase == PhaseExited || phase == PhaseStarting {
		return nil, errors.New("the machine has not started yet")
	}
	ns, err := openMachineNS(leader.Pid, s.cfg.Users != nil && !o.NoIdmap)
	if err != nil {
		return nil, err
	}
	defer ns.close()
	var attr uint64
	if o.ReadOnly {
		attr = unix.MOUNT_ATTR_RDONLY
		if ns.user >= 0 {
			attr |= unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV // as a definition's read-only idmapped bind
		}
	}
	// Private: a clone of a mount in a peer group (every mount of a systemd
	// host is shared) would stay in it, and the unmount of its copy in the
	// propagation directory would propagate to the host's own mounts below
	// the source.
	src, err := cloneTree(o.Source, ns.user, attr, unix.MS_PRIVATE)
	if errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("the source %s does not exist", o.Source)
	}
	if err != nil {
		if ns.user >= 0 {
			err = fmt.Errorf("%w (--idmap=false binds it unmapped)", err)
		}
		return nil, err
	}
	defer unix.Close(src)
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return nil, err
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	name, err := arrivalName()
	if err != nil {
		return nil, err
	}
	outside := filepath.Join(rundir.Propagate(s.cfg.Name), name)
	if isDir {
		err = os.Mkdir(outside, 0o700)
	} else {
		err = os.WriteFile(outside, nil, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("propagation directory (is the machine running under this supervisor?): %w", err)
	}
	defer removeArrival(outside)
	if err := unix.MoveMount(src, "", unix.AT_FDCWD, outside, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return nil, fmt.Errorf("attach on %s: %w", outside, err)
	}
	var uid uint32
	if u := s.cfg.Users; u != nil {
		uid = u.Base
	}
	err = inMountNS(ns.mnt, func() error {
		return attachArrival(ns.root, name, &st, o, uid)
	})
	if err != nil {
		return nil, err
	}
	return &BindResult{Machine: s.cfg.Name, Source: o.Source, Target: filepath.Clean(o.Target), ReadOnly: o.ReadOnly, Idmapped: ns.user >= 0}, nil
}

// machineNS are descriptors of a running machine's PID 1: its root, its
// mount namespace and (-1 when not asked for) its user namespace.
type machineNS struct {
	root, mnt, user int
}

// openMachineNS opens PID 1's root and namespaces through /proc, and checks
// through a pidfd that what was opened was PID 1's (it is the supervisor's
// child: its PID is not reused before the supervisor reaps it).
func openMachineNS(pid int, user bool) (*machineNS, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd of PID 1: %w", err)
	}
	defer unix.Close(pidfd)
	ns := &machineNS{root: -1, mnt: -1, user: -1}
	proc := "/proc/" + strconv.Itoa(pid) + "/"
	if ns.root, err = unix.Open(proc+"root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		ns.mnt, err = unix.Open(proc+"ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err == nil && user {
		ns.user, err = unix.Open(proc+"ns/user", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err == nil {
		err = unix.PidfdSendSignal(pidfd, 0, nil, 0)
	}
	if err != nil {
		ns.close()
		return nil, fmt.Errorf("PID 1's namespaces: %w", err)
	}
	return ns, nil
}

func (ns *machineNS) close() {
	for _, fd := range []int{ns.root, ns.mnt, ns.user} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// arrivalName is a fresh name for one bind's mount point in the propagation
// directory.
func arrivalName() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "bind-" + hex.EncodeToString(b[:]), nil
}

// inMountNS runs fn in the mount namespace ns, on a thread of its own
// (onOwnThread). A Go process is multi-threaded, and setns(CLONE_NEWNS)
// needs a filesystem context of the caller's own: the thread unshares it
// first.
func inMountNS(ns int, fn func() error) error {
	var err error
	onOwnThread(func() {
		if err = unix.Unshare(unix.CLONE_FS); err != nil {
			err = fmt.Errorf("unshare the filesystem context: %w", err)
			return
		}
		if err = unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
			err = fmt.Errorf("join the machine's mount namespace: %w", err)
			return
		}
		err = fn()
	})
	return err
}

// onOwnThread runs fn on a thread locked to it and never handed back: the
// runtime ends the thread with fn, so no other goroutine ever runs in the
// namespaces or filesystem context fn moved it to. It is never the main
// thread, whose namespaces are the whole process's in /proc/self
// (mountinfo, ns/*) and which the runtime parks rather than ends.
func onOwnThread(fn func()) {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// Held, busy, by this goroutine, the main thread cannot run the
			// next one; then it is handed back as it was.
			onOwnThread(fn)
			runtime.UnlockOSThread()
			close(done)
			return
		}
		defer close(done)
		fn()
	}()
	<-done
}

// attachArrival runs in the machine's mount namespace: it clones the bind
// that arrived in /run/host/incoming/name (a clone keeps the locks the
// propagation put on its flags, and is not itself locked, so the guest may
// unmount it) and attaches the clone at o.Target, resolved in the machine's
// root (made, as the machine's root uid, with o.Mkdir).
func attachArrival(root int, name string, src *unix.Stat_t, o BindOptions, uid uint32) error {
	in, err := unix.Openat2(root, incomingDir+"/"+name, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return fmt.Errorf("the bind did not arrive in the machine's /%s: %w", incomingDir, err)
	}
	clone, err := unix.OpenTree(in, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE|unix.AT_EMPTY_PATH)
	unix.Close(in)
	if err != nil {
		return fmt.Errorf("clone the bind in the machine: %w", err)
	}
	defer unix.Close(clone)
	// Out of the arrival's peer group, so that its unmount on the host does
	// not propagate to the bind, nor anything else later.
	if err := unix.MountSetattr(clone, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Propagation: unix.MS_PRIVATE}); err != nil {
		return fmt.Errorf("make the bind private: %w", err)
	}
	// The guest may have covered /run/host with mounts of its own: only the
	// source's own root is taken.
	var st unix.Stat_t
	if err := unix.Fstat(clone, &st); err != nil {
		return err
	}
	if st.Dev != src.Dev || st.Ino != src.Ino {
		return fmt.Errorf("/%s/%s in the machine is not the bind berth made (the guest mounted over /run/host)", incomingDir, name)
	}
	isDir := src.Mode&unix.S_IFMT == unix.S_IFDIR
	var dst int
	asUser(uid, func() { dst, err = resolveTarget(root, o.Target, o.Mkdir, isDir) })
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	if err := unix.Fstat(dst, &st); err != nil {
		return err
	}
	if tDir := st.Mode&unix.S_IFMT == unix.S_IFDIR; tDir != isDir {
		return fmt.Errorf("cannot bind a %s on a %s", kindName(isDir), kindName(tDir))
	}
	if err := unix.MoveMount(clone, "", dst, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach on %s in the machine: %w", o.Target, err)
	}
	return nil
}

func kindName(dir bool) string {
	if dir {
		return "directory"
	}
	return "file"
}

// resolveTarget opens target (an O_PATH descriptor) inside the machine's
// root: every component, symlinks included, is resolved as if root were /
// (openat2 RESOLVE_IN_ROOT), so nothing the guest planted leads outside it.
// With mkdir, missing components are made: directories, and for a file
// bind an empty file at the end.
func resolveTarget(root int, target string, mkdir, dir bool) (int, error) {
	rel := strings.TrimPrefix(filepath.Clean(target), "/")
	fd, err := openInRoot(root, rel, unix.O_PATH)
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return -1, fmt.Errorf("%s in the machine: %w", target, err)
	}
	if !mkdir {
		return -1, fmt.Errorf("%s does not exist in the machine (--mkdir makes it)", target)
	}
	comps := strings.Split(rel, "/")
	for i := range comps {
		sub := strings.Join(comps[:i+1], "/")
		if fd, err = openInRoot(root, sub, unix.O_PATH); err == nil {
			if i == len(comps)-1 {
				return fd, nil
			}
			unix.Close(fd)
			continue
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, fmt.Errorf("%s in the machine: %w", sub, err)
		}
		parent := strings.Join(comps[:i], "/")
		if parent == "" {
			parent = "."
		}
		pfd, err := openInRoot(root, parent, unix.O_PATH)
		if err != nil {
			return -1, fmt.Errorf("%s in the machine: %w", parent, err)
		}
		if i == len(comps)-1 && !dir {
			var f int
			if f, err = unix.Openat(pfd, comps[i], unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0o644); err == nil {
				unix.Close(f)
			}
		} else {
			err = unix.Mkdirat(pfd, comps[i], 0o755)
		}
		unix.Close(pfd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("make /%s in the machine: %w", sub, err)
		}
		if fd, err = openInRoot(root, sub, unix.O_PATH); err != nil {
			// EEXIST above and still nothing: a symlink to nowhere.
			return -1, fmt.Errorf("/%s in the machine (a symlink to a missing path?): %w", sub, err)
		}
		if i == len(comps)-1 {
			return fd, nil
		}
		unix.Close(fd)
	}
	return -1, fmt.Errorf("%s: nothing to resolve", target)
}
