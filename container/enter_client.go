package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// EnterOptions describe a command to run inside a running machine.
type EnterOptions struct {
	// Command is the program and its arguments; the program is looked up in the
	// machine's PATH when it has no slash. Empty: root's login shell from the
	// machine's /etc/passwd (or /bin/sh), started as a login shell.
	Command []string `json:"command,omitempty"`
	// Env is added to a minimal environment (PATH, HOME, TERM, container).
	Env []string `json:"env,omitempty"`
	// Dir is the working directory inside the machine; default / (/root for a
	// login shell).
	Dir string `json:"dir,omitempty"`
	// TTY gives the command a new pty in the machine's own devpts (the guest
	// sees /dev/pts/N of its own); Stdin and Stdout carry its master side and
	// Stderr is unused. Without it the command gets new pipes. Either way the
	// command's fds 0, 1 and 2 are made by the supervisor and are the only ones
	// it has: nothing of the caller reaches the guest.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`

	// MergeStderr gives the command one pipe for its stdout and stderr, as a
	// shell's 2>&1: Enter sets it when Stderr is Stdout.
	MergeStderr bool `json:"mergeStderr,omitempty"`

	Stdin  io.Reader `json:"-"`
	Stdout io.Writer `json:"-"`
	Stderr io.Writer `json:"-"`
	// Size and Resized pass the caller's terminal size on to the pty (SIGWINCH).
	Size    func() (rows, cols uint16) `json:"-"`
	Resized <-chan struct{}            `json:"-"`
	// Signals are passed on to the command (the caller's SIGINT, SIGTERM …
	// when it has no pty to carry them).
	Signals <-chan os.Signal `json:"-"`
}

// execReply is the supervisor's first answer to an exec request; it carries
// the caller's ends of the command's pty or pipes as SCM_RIGHTS.
type execReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Streams names the fds that come with the reply, in order: "pty", or
	// "stdin", "stdout" and "stderr".
	Streams []string `json:"streams,omitempty"`
	// Login is what a login request got (LoginGetty, LoginProgram,
	// LoginShell), and TTY the pty's name in the machine for a getty.
	Login string `json:"login,omitempty"`
	TTY   string `json:"tty,omitempty"`
}

// execEvent is a later line on an exec connection: the command's end from the
// supervisor, or a signal for it from the caller.
type execEvent struct {
	Exit   *int `json:"exit,omitempty"`
	Signal int  `json:"signal,omitempty"`
}

// Enter runs a command in the running machine whose runtime directory is
// runDir and returns the command's own exit code (128+N when a signal N ended
// it), unlike `machinectl shell`. The machine's supervisor starts it, as
// `machinectl shell` has systemd start it: in all the machine's namespaces
// (mount, PID, UTS, IPC, network, cgroup), in its root and cgroups, with its
// bounding set and system call filter, on a pty or pipes it makes; this
// process only relays. When ctx ends or this process goes away, the command
// and its process group are killed.
func Enter(ctx context.Context, runDir string, opts EnterOptions) (int, error) {
	return enter(ctx, runDir, "exec", opts, nil)
}

// What a login request gets (Login's started).
const (
	LoginGetty   = "getty" // a systemd guest's container-getty@N.service on the pty
	LoginProgram = "login" // the machine's login program on the pty
	LoginShell   = "shell" // root's login shell: the machine has no login program
)

// Login gives this process a login prompt on a new pty in the running
// machine of runDir, as `machinectl login` does: opts carries the terminal
// (Stdin, Stdout, Size, Resized, Env; Command is ignored). started is told
// what the machine runs on the pty (LoginGetty, LoginProgram or LoginShell)
// and, for a getty, the pty's name, before anything is relayed.
//
// A getty session lasts until ctx ends (the caller detaches: the supervisor
// then stops the getty) or the machine stops (0, nil); logging out gets a
// new prompt, as with machinectl login. A login program or shell ends with
// its exit code, as Enter.
func Login(ctx context.Context, runDir string, opts EnterOptions, started func(how, tty string)) (int, error) {
	opts.TTY, opts.Command = true, nil
	return enter(ctx, runDir, "login", opts, started)
}

// enter sends an exec or login request and relays until it is over.
func enter(ctx context.Context, runDir, op string, opts EnterOptions, started func(how, tty string)) (int, error) {
	what := "enter machine"
	if op == "login" {
		what = "login"
	}
	c := &Client{runDir: runDir}
	conn, err := c.conn(ctx)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	fail := func(err error) (int, error) {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	reply, streams, rest, err := requestExec(conn, op, &opts)
	if err != nil {
		return fail(err)
	}
	defer func() {
		for _, f := range streams {
			f.Close()
		}
	}()
	if started != nil {
		started(reply.Login, reply.TTY)
	}
	if reply.Login == LoginGetty {
		return relayGetty(ctx, conn, streams["pty"], opts)
	}
	copies := relayStreams(streams, opts)
	if opts.Signals != nil {
		go passSignals(conn, opts.Signals)
	}
	dec := json.NewDecoder(io.MultiReader(rest, conn))
	var ev execEvent
	for ev.Exit == nil {
		if err := dec.Decode(&ev); err != nil {
			return fail(fmt.Errorf("the supervisor gave no exit status: %w", err))
		}
	}
	// What the command printed last is still on its way: wait until its
	// streams end, but not for a background process that keeps them open.
	drained := make(chan struct{})
	go func() { copies.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
	}
	return *ev.Exit, nil
}

// relayGetty relays between the caller's terminal and the master of a
// getty's pty until ctx ends or the supervisor closes conn (the machine
// stopped). The getty hangs the pty up at each logout and a new one opens
// it again: reading the master fails with EIO meanwhile, which is waited
// out, as machinectl's pty forwarder does (PTY_FORWARD_IGNORE_VHANGUP).
func relayGetty(ctx context.Context, conn net.Conn, m *os.File, opts EnterOptions) (int, error) {
	if m == nil {
		return -1, errors.New("login: the supervisor sent no pty")
	}
	ended := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, conn) // the supervisor sends nothing more
		close(ended)
	}()
	if opts.Stdin != nil {
		go func() { _, _ = io.Copy(m, opts.Stdin) }()
	}
	resizeOn(m, opts)
	out := opts.Stdout
	if out == nil {
		out = io.Discard
	}
	go func() {
		buf := make([]byte, 16<<10)
		for {
			n, err := m.Read(buf)
			if n > 0 {
				if _, werr := out.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				if !errors.Is(err, syscall.EIO) {
					return
				}
				select {
				case <-ended:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
	}()
	select {
	case <-ended:
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return 0, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// requestExec sends the exec request and returns the caller's ends of the
// command's streams, by name, and what the connection already held after the
// supervisor's answer.
func requestExec(conn net.Conn, op string, opts *EnterOptions) (execReply, map[string]*os.File, io.Reader, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return execReply{}, nil, nil, errors.New("control connection is not a unix socket")
	}
	if opts.TTY && opts.Size != nil {
		opts.Rows, opts.Cols = opts.Size()
	}
	if opts.Stderr != nil && opts.Stderr == opts.Stdout {
		opts.MergeStderr = true
	}
	if err := json.NewEncoder(conn).Encode(request{Op: op, Exec: opts}); err != nil {
		return execReply{}, nil, nil, err
	}
	reply, files, rest, err := readExecReply(uc)
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	switch {
	case err != nil:
		closeAll()
		return reply, nil, nil, err
	case !reply.OK:
		closeAll()
		return reply, nil, nil, errors.New(reply.Error)
	case len(files) != len(reply.Streams):
		closeAll()
		return reply, nil, nil, fmt.Errorf("%d streams announced, %d received", len(reply.Streams), len(files))
	}
	streams := map[string]*os.File{}
	for i, n := range reply.Streams {
		streams[n] = files[i]
	}
	return reply, streams, rest, nil
}

// relayStreams copies between the caller's reader and writers and the
// command's pty or pipes; the WaitGroup tells when the command's output has
// all been copied.
func relayStreams(streams map[string]*os.File, opts EnterOptions) *sync.WaitGroup {
	var copies sync.WaitGroup
	pump := func(dst io.Writer, src *os.File) {
		if dst == nil {
			dst = io.Discard
		}
		copies.Add(1)
		go func() { defer copies.Done(); _, _ = io.Copy(dst, src) }()
	}
	if m := streams["pty"]; m != nil {
		if opts.Stdin != nil {
			go func() { _, _ = io.Copy(m, opts.Stdin) }()
		}
		pump(opts.Stdout, m)
		resizeOn(m, opts)
		return &copies
	}
	if w := streams["stdin"]; w != nil {
		go func() {
			if opts.Stdin != nil {
				_, _ = io.Copy(w, opts.Stdin)
			}
			w.Close()
		}()
	}
	pump(opts.Stdout, streams["stdout"])
	if e := streams["stderr"]; e != nil {
		pump(opts.Stderr, e)
	}
	return &copies
}

// resizeOn gives the pty master m the caller's terminal size each time it
// changes.
func resizeOn(m *os.File, opts EnterOptions) {
	if opts.Resized == nil || opts.Size == nil {
		return
	}
	go func() {
		for range opts.Resized {
			r, c := opts.Size()
			_ = unix.IoctlSetWinsize(int(m.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: r, Col: c})
		}
	}()
}

// passSignals sends the caller's signals on to the command.
func passSignals(conn net.Conn, sigs <-chan os.Signal) {
	enc := json.NewEncoder(conn)
	for sig := range sigs {
		if s, ok := sig.(syscall.Signal); ok {
			if enc.Encode(execEvent{Signal: int(s)}) != nil {
				return
			}
		}
	}
}

// readExecReply reads the supervisor's first line and the fds sent with it.
func readExecReply(uc *net.UnixConn) (execReply, []*os.File, io.Reader, error) {
	var r execReply
	var files []*os.File
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(3*4))
	var data []byte
	for {
		n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			cms, perr := unix.ParseSocketControlMessage(oob[:oobn])
			if perr == nil {
				for _, cm := range cms {
					if fds, err := unix.ParseUnixRights(&cm); err == nil {
						for _, fd := range fds {
							unix.CloseOnExec(fd)
							files = append(files, os.NewFile(uintptr(fd), "enter"))
						}
					}
				}
			}
		}
		data = append(data, buf[:n]...)
		if i := strings.IndexByte(string(data), '\n'); i >= 0 {
			if err := json.Unmarshal(data[:i], &r); err != nil {
				return r, files, nil, fmt.Errorf("bad answer from the supervisor: %w", err)
			}
			return r, files, strings.NewReader(string(data[i+1:])), nil
		}
		if err != nil {
			return r, files, nil, fmt.Errorf("no answer from the supervisor: %w", err)
		}
		if len(data) > 1<<16 {
			return r, files, nil, errors.New("answer from the supervisor too long")
		}
	}
}
