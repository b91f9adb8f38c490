package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The payload's init stage.
//
// The supervisor starts /proc/self/exe with _BERTH_STAGE=init and Cloneflags for
// new mount, PID, UTS, IPC (and network) namespaces, so this process is PID 1 of
// the machine from its first instruction. Its fd 3 is a SOCK_SEQPACKET socket to
// the supervisor. The protocol, one message each:
//
//	supervisor → init: the Config and the machine's seccomp program as JSON
//	                   (initMessage), sent only after the supervisor has
//	                   put this process in the machine's payload cgroup in every
//	                   hierarchy and run the Network hook: receiving it is the
//	                   go-ahead.
//	init → supervisor: "binds" once it has a mount namespace of its own, when
//	                   the definition has binds; the supervisor attaches
//	                   them there (attachBinds) and answers "binds attached"
//	                   (or "error: TEXT", then kills it)
//	init → supervisor: "console" with the pty master as SCM_RIGHTS (pty console)
//	init → supervisor: "exec KIND" just before execve; the socket is
//	                   close-on-exec, so EOF after it means the exec worked
//	init → supervisor: "error: TEXT" when anything failed (then exit 1)
//
// Everything runs on the main thread (locked in this package's init): the cgroup
// namespace is unshared late, per thread, and the exec must happen on the thread
// that did it.

const syncFD = 3

func payloadInit() {
	sock := os.NewFile(syncFD, "sync")
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(syncFD, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil || n == 0 {
		// The supervisor went away before releasing us: nothing to report to.
		os.Exit(1)
	}
	var msg initMessage
	if err := json.Unmarshal(buf[:n], &msg); err != nil {
		initFail(fmt.Errorf("decode config from the supervisor: %w", err))
	}
	root, err := receivedFD(oob[:oobn])
	if err != nil {
		initFail(fmt.Errorf("the supervisor's go-ahead came without the machine's root: %w", err))
	}
	if err := startPayload(msg, sock, root); err != nil {
		initFail(err)
	}
}

// receivedFD is the one descriptor an SCM_RIGHTS message carried.
func receivedFD(oob []byte) (int, error) {
	cms, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(cms) != 1 {
		return -1, fmt.Errorf("no descriptor (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&cms[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("want one descriptor (%v)", err)
	}
	return fds[0], nil
}

func initFail(err error) {
	_, _ = unix.Write(syncFD, []byte("error: "+err.Error()))
	os.Exit(1)
}

// initMessage is the supervisor's go-ahead: the config, and the machine's
// system call filter the supervisor built (nil: none, security.seccomp:
// optional on a kernel without).
type initMessage struct {
	Config  Config               `json:"config"`
	Seccomp []bpf.RawInstruction `json:"seccomp,omitempty"`
}

func startPayload(msg initMessage, sock *os.File, root int) error {
	cfg, filter := msg.Config, msg.Seccomp
	// The process is now in the payload cgroup everywhere: a cgroup namespace
	// made now has "payload" as its root in every hierarchy (on a v1/hybrid host
	// this cannot be done at clone time).
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("unshare cgroup namespace: %w", err)
	}
	unix.Umask(0)
	if err := enterRoot(root, hasBind(cfg.Mounts)); err != nil {
		return err
	}
	master, err := mountOwn(cfg)
	if err != nil {
		return err
	}
	// Every mount of the machine shared within it, as systemd-nspawn's outer
	// child does (systemd/systemd#3860): a guest's systemd does it itself
	// only when it is not in a container, and its services need it, since
	// it builds their /run/credentials/UNIT (LoadCredential=, SetCredential=)
	// and other mounts in a child namespace and moves them into place. This
	// namespace belongs to the machine's user namespace and its mounts are
	// slaves of the supervisor's: nothing propagates out of it.
	if err := mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("share the machine's mounts within it: %w", err)
	}
	// But /run/host/incoming stays only a slave of the host's propagation
	// directory, as nspawn leaves it: a mount that arrives there is moved
	// into place (machinectl bind's MS_MOVE), and the kernel refuses to move
	// a mount whose parent is shared (EINVAL).
	if err := mount("", "/run/host/incoming", "", unix.MS_SLAVE, ""); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("/run/host/incoming: %w", err)
	}
	if master != nil {
		rights := unix.UnixRights(int(master.Fd()))
		if err := unix.Sendmsg(syncFD, []byte("console"), rights, nil, 0); err != nil {
			return fmt.Errorf("send console to the supervisor: %w", err)
		}
		master.Close()
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return fmt.Errorf("set hostname %q: %w", cfg.Hostname, err)
	}
	if cfg.Console == "pty" {
		if err := attachConsole(cfg.Boot); err != nil {
			return err
		}
	}
	path, argv, kind, err := pickInit(cfg)
	if err != nil {
		return err
	}
	env := payloadEnv(cfg, kind)
	caps, _ := capMask(cfg.CapAdd, cfg.CapDrop, cfg.NetworkMode == "private")
	if err := dropBoundingSet(caps); err != nil {
		return err
	}
	unix.Umask(0o022)
	if err := setProcessLimits(cfg); err != nil {
		return err
	}
	// Nothing the supervisor's own parent left open (without close-on-exec)
	// goes on into the guest.
	_ = unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if kind == "app" {
		return runReaper(cfg, path, argv, env, sock, caps, filter)
	}
	if cfg.WorkingDir != "" {
		if err := unix.Chdir(cfg.WorkingDir); err != nil {
			return fmt.Errorf("workingDir %s: %w", cfg.WorkingDir, err)
		}
	}
	// Every thread: the exec happens on this one, but the filter must be in
	// place on the one that execs whatever the runtime does meanwhile.
	if err := loadSeccomp(filter, true); err != nil {
		return err
	}
	if _, err := unix.Write(syncFD, []byte("exec "+kind)); err != nil {
		return err
	}
	unix.CloseOnExec(syncFD)
	err = unix.Exec(path, argv, env)
	return fmt.Errorf("exec %s: %w", path, err)
}

// enterRoot makes the tree the supervisor built (root, a descriptor of its
// root directory in the supervisor's mount namespace, which this process
// shares until now) this process's /: a mount namespace of its own, copied
// from that one, in which every mount the supervisor made is locked when the
// machine has a user namespace of its own; then the root itself, through a
// recursive bind of it (pivot_root refuses a locked mount as the new root,
// and the top of a fresh bind is not locked), and the supervisor's tree
// detached. pivot_root(".", ".") stacks the old root on top of the new one,
// so no directory for it is needed inside the machine (runc and nspawn do
// the same).
func enterRoot(root int, binds bool) error {
	if err := unix.Fchdir(root); err != nil {
		return fmt.Errorf("enter the machine's root: %w", err)
	}
	unix.Close(root)
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare the mount namespace: %w", err)
	}
	if binds {
		if err := awaitBinds(); err != nil {
			return err
		}
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, ".", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("clone the machine's root: %w", err)
	}
	defer unix.Close(tree)
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, ".", unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the machine's root: %w", err)
	}
	if err := unix.Fchdir(tree); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root into the machine's root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host's root: %w", err)
	}
	return unix.Chdir("/")
}

// awaitBinds has the supervisor attach the definition's binds in this
// process's new mount namespace (attachBinds) and waits until it has.
func awaitBinds() error {
	if _, err := unix.Write(syncFD, []byte("binds")); err != nil {
		return fmt.Errorf("ask for the binds: %w", err)
	}
	buf := make([]byte, 4096)
	n, err := unix.Read(syncFD, buf)
	if err != nil {
		return fmt.Errorf("wait for the binds: %w", err)
	}
	if reply := string(buf[:n]); reply != "binds attached" {
		return fmt.Errorf("binds: %s", reply)
	}
	return nil
}

// attachConsole makes /dev/console (the pty slave) the stdio of PID 1 and,
// for a booted init, its controlling terminal, as a kernel console would be.
// berth's reaper leaves the terminal free for the command, which leads its
// own session on it: taking a terminal another session holds needs
// CAP_SYS_ADMIN on the host, which a machine with private users lacks.
func attachConsole(ctty bool) error {
	if _, err := unix.Setsid(); err != nil && err != unix.EPERM {
		return fmt.Errorf("setsid: %w", err)
	}
	flags := unix.O_RDWR
	if !ctty {
		// A session leader opening a terminal takes it as its controlling
		// one unless told not to.
		flags |= unix.O_NOCTTY
	}
	fd, err := unix.Open("/dev/console", flags, 0)
	if err != nil {
		return fmt.Errorf("open /dev/console: %w", err)
	}
	if ctty {
		_ = unix.IoctlSetInt(fd, unix.TIOCSCTTY, 0)
	}
	for i := 0; i < 3; i++ {
		if err := unix.Dup3(fd, i, 0); err != nil {
			return fmt.Errorf("dup console: %w", err)
		}
	}
	if fd > 2 {
		unix.Close(fd)
	}
	return nil
}

// initCandidates is the order nspawn -b searches in.
var initCandidates = []string{"/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/sbin/init"}

// pickInit finds what to exec (run after pivot_root, so paths are the guest's).
func pickInit(cfg Config) (path string, argv []string, kind string, err error) {
	if !cfg.Boot {
		p := cfg.Args[0]
		if _, err := os.Stat(p); err != nil {
			return "", nil, "", fmt.Errorf("command %s: not found in the machine's root", p)
		}
		return p, cfg.Args, "app", nil
	}
	if cfg.Init != "" {
		path = cfg.Init
		if _, err := os.Stat(path); err != nil {
			return "", nil, "", fmt.Errorf("init %s: not found in the machine's root", path)
		}
	} else {
		for _, c := range initCandidates {
			if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				path = c
				break
			}
		}
		if path == "" {
			return "", nil, "", fmt.Errorf("no init found in the machine's root (looked for %s): is it an OS tree? Set init, or run a command instead of booting", strings.Join(initCandidates, ", "))
		}
	}
	return path, append([]string{path}, cfg.Args...), initKind(path), nil
}

// initKind tells systemd from busybox from other inits by what the path
// resolves to: they want different poweroff signals.
func initKind(path string) string {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		real = path
	}
	switch filepath.Base(real) {
	case "systemd":
		return "systemd"
	case "busybox":
		return "busybox"
	}
	return "init"
}

func payloadEnv(cfg Config, kind string) []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"container=berth",
		"container_uuid=" + dashedUUID(cfg.UUID),
	}
	// Root's home and name; another user's berth does not know (an OCI
	// bundle's process.env gives them).
	asRoot := cfg.User == nil || cfg.User.UID == 0
	if asRoot {
		env = append(env, "HOME=/root")
	}
	if cfg.Console == "pty" {
		env = append(env, "TERM=vt220")
	} else if t := os.Getenv("TERM"); t != "" {
		env = append(env, "TERM="+t)
	}
	if kind == "systemd" || (kind == "app" && cfg.Readiness == ReadinessNotify) {
		env = append(env, "NOTIFY_SOCKET=/run/host/notify")
	}
	if len(cfg.Credentials) > 0 {
		env = append(env, "CREDENTIALS_DIRECTORY="+credentialsDir)
	}
	if kind == "app" && asRoot {
		env = append(env, "USER=root", "LOGNAME=root")
	}
	// cfg.Env overrides berth's own (PATH, TERM, HOME …): one of each.
	return mergeEnv(append(env, cfg.Env...))
}

// runReaper is PID 1 in application mode: a minimal init (nspawn's stub-pid1
// idea) that starts the command as PID 2, forwards the signals a supervisor or
// terminal sends, reaps orphans, and exits with the command's exit code. A
// command run directly as PID 1 would ignore SIGTERM (the kernel drops signals
// PID 1 has no handler for) and leave zombies behind.
//
// The reaper holds no more than the command: it forks it with its own sets
// already cut to the machine's bounding set, and once the command runs it drops
// every capability on every thread but CAP_KILL, sets no_new_privs and makes
// itself non-dumpable (docs/runtime.md, "Application mode").
func runReaper(cfg Config, path string, argv, env []string, sock *os.File, caps uint64, filter []bpf.RawInstruction) error {
	sigs := make(chan os.Signal, 16)
	fwd := []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH, unix.SIGCHLD}
	signal.Notify(sigs, fwd...)
	attr := &syscall.ProcAttr{Env: env, Dir: cfg.WorkingDir, Files: []uintptr{0, 1, 2}, Sys: commandCredentials(cfg)}
	if cfg.Console == "pty" {
		// The command leads its own session on the console, so a Ctrl-C typed on
		// an attached console reaches it (and not this reaper).
		attr.Sys.Setsid, attr.Sys.Setctty, attr.Sys.Ctty = true, true, 0
	}
	// The command must not inherit the sync socket: the supervisor waits for
	// it to close.
	unix.CloseOnExec(syncFD)
	// The reaper lives on in the machine: filtered on every thread, as the
	// command it starts.
	if err := loadSeccomp(filter, true); err != nil {
		return err
	}
	if err := limitToBounding(caps | credentialCaps(cfg)); err != nil {
		return err
	}
	pid, err := syscall.ForkExec(path, argv, attr)
	if err != nil {
		return fmt.Errorf("start %s%s: %w", path, startedAs(cfg), err)
	}
	if err := shedPrivileges(caps); err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		return err
	}
	_, _ = unix.Write(syncFD, []byte("exec app"))
	sock.Close()
	// It idles for the command's life: what setting up touched goes back.
	trimMemory()
	for sig := range sigs {
		if sig != unix.SIGCHLD {
			_ = unix.Kill(pid, sig.(unix.Signal))
			continue
		}
		for {
			var ws unix.WaitStatus
			p, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if p <= 0 || err != nil {
				break
			}
			if p != pid {
				continue
			}
			switch {
			case ws.Exited():
				os.Exit(ws.ExitStatus())
			case ws.Signaled():
				os.Exit(128 + int(ws.Signal()))
			}
		}
	}
	return errors.New("reaper: signal channel closed")
}
