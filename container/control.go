package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/internal/rundir"
)

// ErrNotRunning is returned by Dial when no supervisor answers in the runtime
// directory: a conflict of berth's error vocabulary (errdefs).
var ErrNotRunning = fmt.Errorf("machine is not running: %w", errdefs.ErrConflict)

// request is one control request; each connection carries exactly one.
type request struct {
	Op        string     `json:"op"` // status poweroff reboot terminate kill update attach resize wait exec login bind
	Signal    int        `json:"signal,omitempty"`
	Whom      string     `json:"whom,omitempty"` // kill: "leader" (default) or "all"
	Resources *Resources `json:"resources,omitempty"`
	Write     bool       `json:"write,omitempty"` // attach: ask to be the console's writer
	// Rows and Cols: attach (as the writer) and resize: the console's size.
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Exec is the command of an exec request: the connection then carries
	// its streams' fds (SCM_RIGHTS), the caller's signals and its exit.
	// A login request carries the pty's size and environment in it.
	Exec *EnterOptions `json:"exec,omitempty"`
	Bind *BindOptions  `json:"bind,omitempty"`
}

type response struct {
	OK      bool        `json:"ok"`
	Error   string      `json:"error,omitempty"`
	State   *State      `json:"state,omitempty"`
	Exit    *ExitStatus `json:"exit,omitempty"`
	Writing bool        `json:"writing,omitempty"` // attach: this client may type
	Bind    *BindResult `json:"bind,omitempty"`
	Writer  string      `json:"writer,omitempty"` // attach: who types, when it is not this client
}

// Client talks to one machine's supervisor over RUN/machines/NAME/control.sock.
// Every call makes its own connection.
type Client struct {
	runDir string
}

// Dial returns a client for the supervisor in runDir after checking that it
// answers.
func Dial(runDir string) (*Client, error) {
	c := &Client{runDir: runDir}
	conn, err := c.conn(context.Background())
	if err != nil {
		return nil, err
	}
	conn.Close()
	return c, nil
}

func (c *Client) conn(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", rundir.Dir(c.runDir).ControlSocket())
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%s: %w", c.runDir, ErrNotRunning)
		}
		return nil, fmt.Errorf("control socket in %s: %w", c.runDir, err)
	}
	return conn, nil
}

func (c *Client) call(ctx context.Context, req request) (response, error) {
	conn, err := c.conn(ctx)
	if err != nil {
		return response{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return response{}, fmt.Errorf("%s request: %w", req.Op, err)
	}
	var resp response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		if ctx.Err() != nil {
			return resp, ctx.Err()
		}
		return resp, fmt.Errorf("%s request: no answer from the supervisor: %w", req.Op, err)
	}
	if !resp.OK {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// Status returns the supervisor's current state.
func (c *Client) Status(ctx context.Context) (State, error) {
	r, err := c.call(ctx, request{Op: "status"})
	if err != nil || r.State == nil {
		return State{}, err
	}
	return *r.State, nil
}

// Poweroff asks the guest to shut down cleanly (SIGRTMIN+3 to systemd, SIGUSR2
// to busybox init, SIGTERM to an application) and returns at once.
func (c *Client) Poweroff(ctx context.Context) error {
	_, err := c.call(ctx, request{Op: "poweroff"})
	return err
}

// Reboot asks the guest to reboot (SIGINT to its init, as Ctrl-Alt-Del).
func (c *Client) Reboot(ctx context.Context) error {
	_, err := c.call(ctx, request{Op: "reboot"})
	return err
}

// Terminate powers the machine off and kills whatever is left after the stop
// timeout; it returns at once (Wait tells when it is over).
func (c *Client) Terminate(ctx context.Context) error {
	_, err := c.call(ctx, request{Op: "terminate"})
	return err
}

// Kill sends sig to the guest's PID 1 (whom "leader") or to every process of
// the machine ("all").
func (c *Client) Kill(ctx context.Context, sig syscall.Signal, whom string) error {
	_, err := c.call(ctx, request{Op: "kill", Signal: int(sig), Whom: whom})
	return err
}

// Update changes the machine's resource limits in place.
func (c *Client) Update(ctx context.Context, r Resources) error {
	_, err := c.call(ctx, request{Op: "update", Resources: &r})
	return err
}

// Wait returns when the machine has ended, with how it ended. If the
// supervisor is already gone, it reads the exit status from state.json.
func (c *Client) Wait(ctx context.Context) (ExitStatus, error) {
	r, err := c.call(ctx, request{Op: "wait"})
	if err == nil && r.Exit != nil {
		return *r.Exit, nil
	}
	if ctx.Err() != nil {
		return ExitStatus{}, ctx.Err()
	}
	// The exit status is final once state.json records it, even while the
	// supervisor is still cleaning up (and closing its socket under a request
	// that arrived just then).
	if st, serr := ReadState(c.runDir); serr == nil && st.Exit != nil && (st.Phase == PhaseExited || !st.SupervisorAlive()) {
		return *st.Exit, nil
	}
	if err == nil {
		err = errors.New("wait: the supervisor gave no exit status")
	}
	return ExitStatus{}, err
}

// Attach connects to the console: reading the returned connection gives the
// console's output from now on, writing to it types into the console when
// writing is true (one writer at a time; later ones only read).
func (c *Client) Attach(ctx context.Context, write bool) (conn net.Conn, writing bool, err error) {
	conn, a, err := c.AttachConsole(ctx, AttachOptions{Write: write})
	return conn, a.Writing, err
}

// AttachOptions say how to attach to the console.
type AttachOptions struct {
	// Write asks to type into the console; the first client that asks does
	// (and no client while berth boot's terminal types).
	Write bool
	// Rows and Cols size the console pty when this client writes.
	Rows, Cols uint16
}

// Attached tells how a client was attached to the console.
type Attached struct {
	Writing bool   // this client types into the console
	Writer  string // who types instead, when this client asked and may not
}

// AttachConsole is Attach with options; closing the connection's writing
// side (CloseWrite) gives up writing and goes on reading.
func (c *Client) AttachConsole(ctx context.Context, opts AttachOptions) (net.Conn, Attached, error) {
	conn, err := c.conn(ctx)
	if err != nil {
		return nil, Attached{}, err
	}
	if err := json.NewEncoder(conn).Encode(request{Op: "attach", Write: opts.Write, Rows: opts.Rows, Cols: opts.Cols}); err != nil {
		conn.Close()
		return nil, Attached{}, err
	}
	// Read the answer byte by byte: the console stream follows it directly.
	line, err := readLine(conn)
	if err != nil {
		conn.Close()
		return nil, Attached{}, fmt.Errorf("attach: %w", err)
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil || !resp.OK {
		conn.Close()
		if err == nil {
			err = errors.New(resp.Error)
		}
		return nil, Attached{}, fmt.Errorf("attach: %w", err)
	}
	return conn, Attached{Writing: resp.Writing, Writer: resp.Writer}, nil
}

// Resize gives the console pty a new size (the guest gets SIGWINCH). Only
// the client attached as the writer may: it is the one whose terminal the
// guest draws for; the supervisor tells it by the caller's PID.
func (c *Client) Resize(ctx context.Context, rows, cols uint16) error {
	_, err := c.call(ctx, request{Op: "resize", Rows: rows, Cols: cols})
	return err
}

func readLine(conn net.Conn) ([]byte, error) {
	var line []byte
	b := make([]byte, 1)
	for len(line) < 1<<16 {
		if _, err := conn.Read(b); err != nil {
			return nil, err
		}
		if b[0] == '\n' {
			return line, nil
		}
		line = append(line, b[0])
	}
	return nil, errors.New("answer too long")
}

// serveControl accepts control connections until l is closed.
func (s *supervisor) serveControl(l net.Listener) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			s.handle(conn)
		}()
	}
}

func (s *supervisor) handle(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := readLine(conn)
	if err != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		writeResp(conn, response{Error: "bad request: " + err.Error()})
		return
	}
	var resp response
	switch req.Op {
	case "status":
		st := s.snapshot()
		resp = response{OK: true, State: &st}
	case "poweroff":
		err = s.poweroff(false)
	case "terminate":
		err = s.poweroff(true)
	case "reboot":
		err = s.reboot()
	case "kill":
		err = s.kill(syscall.Signal(req.Signal), req.Whom)
	case "update":
		if req.Resources == nil {
			err = errors.New("update: resources are missing")
		} else {
			err = s.update(*req.Resources)
		}
	case "wait":
		select {
		case <-s.done:
		case <-s.closing:
		}
		st := s.snapshot()
		resp = response{OK: st.Exit != nil, Exit: st.Exit}
		if st.Exit == nil {
			resp.Error = "supervisor is closing"
		}
	case "bind":
		if req.Bind == nil {
			err = errors.New("bind: what to bind is missing")
		} else {
			resp.Bind, err = s.bind(*req.Bind)
		}
	case "exec":
		_ = conn.SetWriteDeadline(time.Time{})
		s.serveExec(conn, req.Exec, "")
		return
	case "attach":
		// The answer says whether this client may type; then the connection
		// becomes the raw console stream in both directions.
		if s.console == nil {
			writeResp(conn, response{Error: "this machine's console is not a pty (console: passthrough)"})
			return
		}
		s.console.attach(conn, req.Write, req.Rows, req.Cols, func(writing bool, writer string) {
			writeResp(conn, response{OK: true, Writing: writing, Writer: writer})
			_ = conn.SetWriteDeadline(time.Time{})
		})
		return
	case "resize":
		if s.console == nil {
			err = errors.New("resize: this machine's console is not a pty (console: passthrough)")
		} else {
			err = s.console.setSize(peerPID(conn), req.Rows, req.Cols)
		}
	case "login":
		_ = conn.SetWriteDeadline(time.Time{})
		s.serveLogin(conn, req.Exec)
		return
	default:
		err = fmt.Errorf("unknown request %q", req.Op)
	}
	if req.Op != "status" && req.Op != "wait" {
		resp.OK = err == nil
		if err != nil {
			resp.Error = err.Error()
		}
	}
	writeResp(conn, resp)
}

func writeResp(conn net.Conn, r response) {
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = json.NewEncoder(conn).Encode(r)
}

// listenControl makes the root-only control socket.
func listenControl(runDir string) (net.Listener, error) {
	p := rundir.Dir(runDir).ControlSocket()
	_ = os.Remove(p)
	l, err := net.Listen("unix", p)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
