package container

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// consoleHub connects the guest's console (the pty master the payload handed
// over) with its log, the foreground terminal of `berth boot` and the clients
// attached over the control socket. The hub always reads the master, whether
// anyone watches or not: a guest must never block on its console.
//
// Several clients may read; one at a time may write (the first that asks).
type consoleHub struct {
	mu      sync.Mutex
	master  *os.File
	log     *consoleLog
	out     io.Writer // the foreground terminal, or nil
	size    func() (rows, cols uint16)
	clients map[*consoleClient]bool
	writer  *consoleClient
	// retiring is set once the payload is gone: the pump then stops at the
	// first EIO, after draining what the guest wrote last, and closes pumped.
	retiring bool
	pumped   chan struct{}
	wake     chan struct{} // closed by retire: a pump waiting out an EIO looks again at once
}

type consoleClient struct {
	conn net.Conn
	ch   chan []byte
}

func newConsoleHub(log *consoleLog, out io.Writer, size func() (uint16, uint16)) *consoleHub {
	return &consoleHub{log: log, out: out, size: size, clients: map[*consoleClient]bool{}}
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

// resize gives the console pty the foreground terminal's size (the guest gets
// SIGWINCH).
func (h *consoleHub) resize() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.size == nil || h.master == nil {
		return
	}
	if rows, cols := h.size(); rows > 0 && cols > 0 {
		_ = unix.IoctlSetWinsize(int(h.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}
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
		h.log.Write(p)
	}
	if h.out != nil {
		_, _ = h.out.Write(p)
	}
	for c := range h.clients {
		b := append([]byte(nil), p...)
		select {
		case c.ch <- b:
		default: // a slow client misses output rather than stalling the guest
		}
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
//
// hello is written to conn first, once it is known whether this client writes,
// and before any console output.
func (h *consoleHub) attach(conn net.Conn, write bool, hello func(writing bool)) {
	c := &consoleClient{conn: conn, ch: make(chan []byte, 256)}
	writing := false
	h.mu.Lock()
	if write && h.writer == nil {
		h.writer = c
		writing = true
	}
	hello(writing)
	h.clients[c] = true
	h.mu.Unlock()
	go func() {
		for b := range c.ch {
			_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write(b); err != nil {
				conn.Close()
				for range c.ch {
				}
				return
			}
		}
	}()
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if n > 0 && writing {
			_, _ = h.Write(buf[:n])
		}
		if err != nil {
			break
		}
	}
	h.mu.Lock()
	delete(h.clients, c)
	if h.writer == c {
		h.writer = nil
	}
	close(c.ch)
	h.mu.Unlock()
}

func (h *consoleHub) close() {
	h.retire()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.master != nil {
		h.master.Close()
		h.master = nil
	}
	for c := range h.clients {
		c.conn.Close()
	}
	if h.log != nil {
		h.log.Close()
	}
}

// consoleLog appends to a file and rotates it to NAME.1 when it would exceed max
// bytes, so a chatty guest costs at most twice max on disk.
type consoleLog struct {
	path string
	max  int64
	f    *os.File
	size int64
}

func openConsoleLog(path string, max int64) (*consoleLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	st, _ := f.Stat()
	return &consoleLog{path: path, max: max, f: f, size: st.Size()}, nil
}

func (l *consoleLog) Write(p []byte) {
	if l.f == nil {
		return
	}
	if l.size+int64(len(p)) > l.max && l.size > 0 {
		l.f.Close()
		_ = os.Rename(l.path, l.path+".1")
		f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
		if err != nil {
			l.f = nil
			return
		}
		l.f, l.size = f, 0
	}
	n, _ := l.f.Write(p)
	l.size += int64(n)
}

func (l *consoleLog) Close() {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// EscapeReader passes a terminal's input through and calls onEscape when it sees
// Ctrl-] three times within a second, as systemd-nspawn's ^]^]^]; the three
// bytes themselves are not passed on.
type EscapeReader struct {
	R        io.Reader
	OnEscape func()
	times    []time.Time
}

func (e *EscapeReader) Read(p []byte) (int, error) {
	n, err := e.R.Read(p)
	out := p[:0]
	for _, b := range p[:n] {
		if b != 0x1d {
			out = append(out, b)
			continue
		}
		now := time.Now()
		e.times = append(e.times, now)
		if len(e.times) > 3 {
			e.times = e.times[len(e.times)-3:]
		}
		if len(e.times) == 3 && now.Sub(e.times[0]) <= time.Second {
			e.times = nil
			if e.OnEscape != nil {
				e.OnEscape()
			}
		}
	}
	return len(out), err
}
