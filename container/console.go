package container

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthd/berth/internal/fsutil"
)

// consoleHub connects the guest's console (the pty master the payload handed
// over) with its log, the foreground terminal of `berth boot` and the clients
// attached over the control socket. The hub always reads the master, whether
// anyone watches or not: a guest must never block on its console. The log is
// written by the pump itself and gets everything; the terminal and each client
// are fed through a consoleReader, so none of them can hold up the pump.
//
// Several clients may read; one at a time may write (the first that asks).
// A foreground terminal that types (berth boot on a terminal) is that writer
// for as long as the machine runs: clients then only read.
type consoleHub struct {
	mu      sync.Mutex
	master  *os.File
	log     *fsutil.RotatingFile
	term    *consoleReader // the foreground terminal, or nil
	size    func() (rows, cols uint16)
	clients map[*consoleClient]bool
	writer  *consoleClient
	// termWrites: the foreground terminal types into the console (and owns
	// its size); no client may write.
	termWrites bool
	// rows and cols are the size the writing client asked for, kept for the
	// next boot's console.
	rows, cols uint16
	closed     bool
	// retiring is set once the payload is gone: the pump then stops at the
	// first EIO, after draining what the guest wrote last, and closes pumped.
	retiring bool
	pumped   chan struct{}
	wake     chan struct{} // closed by retire: a pump waiting out an EIO looks again at once
}

type consoleClient struct {
	conn net.Conn
	out  *consoleReader
	pid  int // the client's PID (SO_PEERCRED), to name the writer to others
}

func newConsoleHub(log *fsutil.RotatingFile, out io.Writer, size func() (uint16, uint16)) *consoleHub {
	h := &consoleHub{log: log, size: size, clients: map[*consoleClient]bool{}}
	if out != nil {
		h.term = newConsoleReader(out, nil)
		go h.term.run()
	}
	return h
}

// setMaster switches the hub to a new payload's console (at every boot) and
// starts reading it until the payload's side is gone.
func (h *consoleHub) setMaster(m *os.File) {
	h.retire()
	h.mu.Lock()
	old := h.master
	h.master, h.retiring = m, false
	done := make(chan struct{})
	h.pumped, h.wake = done, make(chan struct{})
	h.mu.Unlock()
	h.resize()
	if old != nil {
		old.Close()
	}
	go h.pump(m, done)
}

// resize gives the console pty the foreground terminal's size, or the one the
// writing client asked for last (the guest gets SIGWINCH).
func (h *consoleHub) resize() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.master == nil {
		return
	}
	rows, cols := h.rows, h.cols
	if h.size != nil {
		rows, cols = h.size()
	}
	if rows > 0 && cols > 0 {
		_ = unix.IoctlSetWinsize(int(h.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}
}

// setSize is a client's resize request: only the writer's terminal sizes the
// console (readers see it as the writer does), and never while a
// foreground terminal owns it.
func (h *consoleHub) setSize(pid int, rows, cols uint16) error {
	h.mu.Lock()
	switch {
	case h.size != nil:
		h.mu.Unlock()
		return errors.New("resize: the console's size follows berth boot's terminal")
	case h.writer == nil || h.writer.pid != pid:
		h.mu.Unlock()
		return errors.New("resize: only the console's writer sets its size")
	}
	h.rows, h.cols = rows, cols
	h.mu.Unlock()
	h.resize()
	return nil
}

// writerLocked names who types into the console, for a client refused
// writing ("" when no one does).
func (h *consoleHub) writerLocked() string {
	switch {
	case h.termWrites:
		return "berth boot's terminal, PID " + strconv.Itoa(os.Getpid())
	case h.writer != nil && h.writer.pid > 0:
		return "PID " + strconv.Itoa(h.writer.pid)
	case h.writer != nil:
		return "another client"
	}
	return ""
}

// retire lets the current pump drain the console and waits (briefly) for it:
// the last lines a guest prints ("Powering off.") come after its init has
// exited, still in the pty's buffer.
func (h *consoleHub) retire() {
	h.mu.Lock()
	if !h.retiring && h.wake != nil {
		close(h.wake)
	}
	h.retiring = true
	done := h.pumped
	h.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}

func (h *consoleHub) pump(m *os.File, done chan struct{}) {
	defer close(done)
	buf := make([]byte, 16<<10)
	for {
		n, err := m.Read(buf)
		if n > 0 {
			h.broadcast(buf[:n])
		}
		if err != nil {
			// EIO means no slave fd is open right now. That happens while the
			// guest runs too: agetty vhangup()s the console, systemd closes and
			// reopens it. Keep reading (as nspawn's pty forwarder does) until
			// the master is replaced at the next boot or closed at the end.
			h.mu.Lock()
			current := h.master == m && !h.retiring
			wake := h.wake
			h.mu.Unlock()
			if !current || !errors.Is(err, syscall.EIO) {
				return
			}
			select {
			case <-wake:
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

func (h *consoleHub) broadcast(p []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.log != nil {
		_, _ = h.log.Write(p) // a log that cannot be written must not stop the console
	}
	if h.term != nil {
		h.term.push(p)
	}
	for c := range h.clients {
		c.out.push(p)
	}
}

// Write types into the console (input of the foreground terminal or of the
// attached writer).
func (h *consoleHub) Write(p []byte) (int, error) {
	h.mu.Lock()
	m := h.master
	h.mu.Unlock()
	if m == nil {
		return len(p), nil
	}
	return m.Write(p)
}

// attach streams the console to conn and, if write is true and no one else
// writes, conn's input to the console, until conn closes or the hub does.
// A writer's rows and cols (when not 0) size the console.
//
// hello is written to conn first, once it is known whether this client writes
// (and if not, who does), and before any console output (which waits in the
// client's queue meanwhile).
//
// A client that shuts down only its writing side (berth console at the end
// of a piped stdin) stops being the writer and goes on reading.
func (h *consoleHub) attach(conn net.Conn, write bool, rows, cols uint16, hello func(writing bool, writer string)) {
	c := &consoleClient{conn: conn, pid: peerPID(conn)}
	c.out = newConsoleReader(conn, func() { conn.Close() })
	writing, writer := false, ""
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		conn.Close()
		return
	}
	if write && h.writer == nil && !h.termWrites {
		h.writer = c
		writing = true
		if rows > 0 && cols > 0 && h.size == nil {
			h.rows, h.cols = rows, cols
		}
	} else if write {
		writer = h.writerLocked()
	}
	h.clients[c] = true
	h.mu.Unlock()
	if writing {
		h.resize()
	}
	hello(writing, writer)
	go c.out.run()
	buf := make([]byte, 4096)
	var err error
	for {
		var n int
		n, err = conn.Read(buf)
		if n > 0 && writing {
			_, _ = h.Write(buf[:n])
		}
		if err != nil {
			break
		}
	}
	h.release(c)
	// Half-closed: keep feeding it until it goes (a write fails, or it is
	// seen gone) or the hub closes.
	halfClosed := errors.Is(err, io.EOF) && !peerGone(conn)
	for halfClosed {
		select {
		case <-c.out.done:
			halfClosed = false
		case <-time.After(2 * time.Second):
			halfClosed = !peerGone(conn)
		}
	}
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
	c.out.close()
	conn.Close()
}

// release makes c no longer the writer.
func (h *consoleHub) release(c *consoleClient) {
	h.mu.Lock()
	if h.writer == c {
		h.writer = nil
	}
	h.mu.Unlock()
}

// peerPID is the PID of the process at the other end of a unix socket (0 if
// unknown).
func peerPID(conn net.Conn) int {
	pid := 0
	withFd(conn, func(fd int) {
		if cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// peerGone reports whether the other end of conn has closed it altogether
// (not only shut down its writing side): the kernel then reports a hangup.
func peerGone(conn net.Conn) bool {
	gone := true
	withFd(conn, func(fd int) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil {
			gone = n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return gone
}

// withFd calls f with conn's file descriptor, when it is a unix socket.
func withFd(conn net.Conn, f func(fd int)) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { f(int(fd)) })
}

// consoleFlush is how long close waits for the terminal and the clients to
// take what is still queued for them.
const consoleFlush = time.Second

func (h *consoleHub) close() {
	h.retire()
	h.mu.Lock()
	h.closed = true
	if h.master != nil {
		h.master.Close()
		h.master = nil
	}
	if h.log != nil {
		h.log.Close()
	}
	var readers []*consoleReader
	if h.term != nil {
		readers = append(readers, h.term)
	}
	var conns []net.Conn
	for c := range h.clients {
		readers = append(readers, c.out)
		conns = append(conns, c.conn)
	}
	h.mu.Unlock()
	// The last lines ("Powering off.") are still queued: let every reader
	// have them, but do not wait for one that is stalled.
	deadline := time.After(consoleFlush)
	for _, r := range readers {
		r.close()
	}
	for _, r := range readers {
		select {
		case <-r.done:
		case <-deadline:
		}
	}
	for _, c := range conns {
		c.Close()
	}
}

// consoleQueueMax is how far (in bytes) a reader of the console may fall
// behind before its output is dropped (plus what it is writing at the moment:
// at most as much again).
const consoleQueueMax = 1 << 20

// consoleReader feeds one reader of the console (the foreground terminal, an
// attached client) from a bounded queue, in a goroutine of its own: a reader
// that stalls (a paused `berth boot | less`, a client that stopped reading)
// never holds up the pump, the guest or the other readers. Once it is more
// than consoleQueueMax behind, further output is dropped until it has caught
// up, and it is then told how much it missed.
type consoleReader struct {
	w       io.Writer
	onError func() // called when a write fails (a client: close its connection)
	mu      sync.Mutex
	queue   [][]byte
	queued  int
	dropped int
	closed  bool
	wake    chan struct{}
	done    chan struct{} // closed when run has returned
}

func newConsoleReader(w io.Writer, onError func()) *consoleReader {
	return &consoleReader{w: w, onError: onError, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// push queues a copy of p; it never blocks.
func (r *consoleReader) push(p []byte) {
	r.mu.Lock()
	switch {
	case r.closed:
	case r.dropped > 0 || r.queued+len(p) > consoleQueueMax:
		r.dropped += len(p)
	default:
		r.queue = append(r.queue, append([]byte(nil), p...))
		r.queued += len(p)
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// close lets run write what is queued and return.
func (r *consoleReader) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *consoleReader) run() {
	defer close(r.done)
	for {
		r.mu.Lock()
		for len(r.queue) == 0 && r.dropped == 0 && !r.closed {
			r.mu.Unlock()
			<-r.wake
			r.mu.Lock()
		}
		batch, dropped, closed := r.queue, r.dropped, r.closed
		r.queue, r.queued, r.dropped = nil, 0, 0
		r.mu.Unlock()
		if len(batch) == 0 && dropped == 0 && closed {
			return
		}
		if dropped > 0 {
			// What was dropped came after what was queued.
			batch = append(batch, fmt.Appendf(nil, "\r\n[berth: %d bytes of console output dropped: this reader fell behind]\r\n", dropped))
		}
		for _, b := range batch {
			if _, err := r.w.Write(b); err != nil {
				r.mu.Lock()
				r.closed, r.queue, r.queued, r.dropped = true, nil, 0, 0
				r.mu.Unlock()
				if r.onError != nil {
					r.onError()
				}
				return
			}
		}
	}
}

// openConsoleLog opens the console log, which is rotated to NAME.1 at max
// bytes, so a chatty guest costs at most twice max on disk.
func openConsoleLog(path string, max int64) (*fsutil.RotatingFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	return fsutil.OpenRotating(path, max, 0o640)
}

// EscapeReader passes a terminal's input through and calls OnEscape when it
// sees Ctrl-] three times within a second, as systemd-nspawn's ^]^]^]; those
// three bytes are not passed on. A Ctrl-] is held back only until it is clear
// that it does not start the escape: the next other byte, or a second after
// the first, passes it on (a guest's program may want a Ctrl-] of its own).
//
// It reads R in a goroutine of its own (so a held byte can be passed on while R
// has nothing more); Read must not be called from several goroutines at once.
type EscapeReader struct {
	R        io.Reader
	OnEscape func()

	window  time.Duration // 0 means a second (tests shorten it)
	start   sync.Once
	in      chan escapeRead
	pending []byte    // passed on, not yet returned by Read
	held    int       // Ctrl-] bytes held back (0-2)
	first   time.Time // when the first of them came
	err     error
}

type escapeRead struct {
	b   []byte
	err error
}

const ctrlBracket = 0x1d

func (e *EscapeReader) Read(p []byte) (int, error) {
	e.start.Do(func() {
		if e.window == 0 {
			e.window = time.Second
		}
		e.in = make(chan escapeRead)
		go func() {
			for {
				buf := make([]byte, 4096)
				n, err := e.R.Read(buf)
				e.in <- escapeRead{buf[:n], err}
				if err != nil {
					return
				}
			}
		}()
	})
	for {
		if len(e.pending) > 0 {
			n := copy(p, e.pending)
			e.pending = e.pending[n:]
			return n, nil
		}
		if e.err != nil {
			return 0, e.err
		}
		var expire <-chan time.Time
		var t *time.Timer
		if e.held > 0 {
			t = time.NewTimer(time.Until(e.first.Add(e.window)))
			expire = t.C
		}
		select {
		case r := <-e.in:
			e.feed(r.b, time.Now())
			if r.err != nil {
				e.release()
				e.err = r.err
			}
		case <-expire:
			e.release()
		}
		if t != nil {
			t.Stop()
		}
	}
}

// feed takes bytes read at now.
func (e *EscapeReader) feed(b []byte, now time.Time) {
	for _, c := range b {
		if c != ctrlBracket {
			e.release()
			e.pending = append(e.pending, c)
			continue
		}
		if e.held > 0 && now.Sub(e.first) > e.window {
			e.release()
		}
		if e.held == 0 {
			e.first = now
		}
		e.held++
		if e.held == 3 {
			e.held = 0
			if e.OnEscape != nil {
				e.OnEscape()
			}
		}
	}
}

// release passes the held Ctrl-] bytes on: they were not an escape.
func (e *EscapeReader) release() {
	for ; e.held > 0; e.held-- {
		e.pending = append(e.pending, ctrlBracket)
	}
}
