package container

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// What an entered command is, found in the machine's own files: read through
// a descriptor of PID 1's root with openat2(RESOLVE_IN_ROOT), so that paths
// and symbolic links resolve as they do in the guest, never to a host file a
// planted link points to, and no magic link (/proc/self/root …) leads out.

// machinePath is the PATH a command entered into a machine starts with.
const machinePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// command is a command to start in a machine: the program's path there, its
// argv, environment and working directory.
type command struct {
	path string
	argv []string
	env  []string
	dir  string
}

// resolveCommand turns opts into the command to start in the machine whose
// root is the directory root: a minimal environment plus opts.Env, the
// program looked up in the machine's PATH, and without a command root's
// login shell from the machine's /etc/passwd, in /root.
func resolveCommand(root int, opts EnterOptions) (command, error) {
	env := []string{"PATH=" + machinePath, "HOME=/root", "container=berth"}
	term := "TERM=dumb"
	if opts.TTY {
		term = "TERM=xterm-256color"
	}
	c := command{argv: opts.Command, env: append(append(env, term), opts.Env...), dir: opts.Dir}
	if len(c.argv) == 0 {
		c.argv = []string{loginShell(root), "-l"}
		if c.dir == "" {
			c.dir = "/root"
			if st, err := statInRoot(root, c.dir); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
				c.dir = "/"
			}
		}
	}
	if c.dir == "" {
		c.dir = "/"
	}
	var err error
	c.path, err = lookPathIn(root, c.argv[0], c.env)
	return c, err
}

// loginShell is root's shell in the machine, from its /etc/passwd, or
// /bin/sh.
func loginShell(root int) string {
	fd, err := openInRoot(root, "/etc/passwd", unix.O_RDONLY)
	if err != nil {
		return "/bin/sh"
	}
	f := os.NewFile(uintptr(fd), "/etc/passwd")
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) == 7 && fields[0] == "root" && strings.HasPrefix(fields[6], "/") {
			if st, err := statInRoot(root, fields[6]); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
				return fields[6]
			}
		}
	}
	return "/bin/sh"
}

// lookPathIn finds a program in the machine's PATH (from env); a name with a
// slash is taken as it is, if it exists.
func lookPathIn(root int, name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if _, err := statInRoot(root, name); err != nil {
			return "", fmt.Errorf("%s: not found in the machine", name)
		}
		return name, nil
	}
	pathVar := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathVar = v
		}
	}
	for _, d := range filepath.SplitList(pathVar) {
		p := filepath.Join(d, name)
		if st, err := statInRoot(root, p); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in the machine's PATH", name)
}

// openInRoot opens p as the machine sees it (relative to its root, which a
// relative p is relative to as well). The kernel refuses a lookup that a
// rename raced (EAGAIN): it is tried again, a bounded number of times (a
// guest renaming without end gets the error).
func openInRoot(root int, p string, flags int) (int, error) {
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(root, p, how)
		if (!errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR)) || i == 100 {
			return fd, err
		}
	}
}

// statInRoot is stat(2) of p as the machine sees it.
func statInRoot(root int, p string) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := openInRoot(root, p, unix.O_PATH)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &st)
	return st, err
}

// openPty opens a new pty in the machine's own devpts: its /dev/pts/ptmx
// (no symbolic link followed; it must be a devpts), and the slave through
// the master (TIOCGPTPEER), with no path at all. The slave belongs to whoever
// opened the master, this process, the host's root; in a machine with a user
// namespace that is no one the guest knows, so it is given to the machine's
// root and its group 5 (tty), as a pty the guest opened itself would be.
func openPty(root int, rows, cols uint16, users *Users) (master, slave *os.File, err error) {
	fd, err := unix.Openat2(root, "dev/pts/ptmx", &unix.OpenHow{
		Flags:   unix.O_RDWR | unix.O_NOCTTY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("open the machine's /dev/pts/ptmx: %w", err)
	}
	master = os.NewFile(uintptr(fd), "ptmx")
	fail := func(what string, err error) (*os.File, *os.File, error) {
		master.Close()
		return nil, nil, fmt.Errorf("pty in the machine: %s: %w", what, err)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return fail("statfs", err)
	}
	if fs.Type != unix.DEVPTS_SUPER_MAGIC {
		return fail("/dev/pts/ptmx", errors.New("not on a devpts"))
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return fail("unlock", err)
	}
	if rows > 0 && cols > 0 {
		_ = unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}
	sfd, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if e != 0 {
		return fail("open the slave", e)
	}
	slave = os.NewFile(sfd, "pts")
	if users != nil {
		if err := unix.Fchown(int(sfd), int(users.Base), int(users.Base)+5); err != nil {
			slave.Close()
			return fail("give the slave to the machine's root", err)
		}
	}
	return master, slave, nil
}

// MachineHas reports whether the running machine of runDir has something at
// one of paths as the guest sees them: resolved in its PID 1's root with
// openat2(RESOLVE_IN_ROOT), so a symbolic link the guest planted never makes
// berth look at a host file. It is how berth logs tells a guest that keeps a
// journal. It fails with ErrNotRunning when no machine runs there.
func MachineHas(runDir string, paths ...string) (bool, error) {
	st, err := ReadState(runDir)
	if err != nil || !st.SupervisorAlive() || st.LeaderPID <= 0 || st.Phase == PhaseExited {
		return false, fmt.Errorf("%s: %w", runDir, ErrNotRunning)
	}
	pidfd, err := unix.PidfdOpen(st.LeaderPID, 0)
	if err != nil {
		return false, fmt.Errorf("%s: %w", runDir, ErrNotRunning)
	}
	defer unix.Close(pidfd)
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", st.LeaderPID), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("root of the machine's PID 1: %w", err)
	}
	defer unix.Close(root)
	// The root opened was PID 1's if it still lives now.
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		return false, fmt.Errorf("%s: %w", runDir, ErrNotRunning)
	}
	for _, p := range paths {
		if _, err := statInRoot(root, p); err == nil {
			return true, nil
		}
	}
	return false, nil
}
