package container_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
)

// lockedBuffer collects what a reader of the console or of a login gets.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until what reads shows text, and fails the test otherwise.
func waitFor(t *testing.T, what string, b *lockedBuffer, text string) {
	t.Helper()
	if err := testenv.Poll(20*time.Second, func() error {
		if !strings.Contains(b.String(), text) {
			return fmt.Errorf("no %q yet", text)
		}
		return nil
	}); err != nil {
		t.Fatalf("%s: %v in:\n%q", what, err, b.String())
	}
}

// consoleShellMachine boots the busybox guest with a root shell on its
// console (busybox init's "::respawn:-/bin/sh").
func consoleShellMachine(t *testing.T) *machine {
	t.Helper()
	cfg := newConfig(t, "con")
	cfg.Boot = true
	overlayRoot(t, &cfg, testenv.BusyboxGuest(t))
	etc := filepath.Join(cfg.Root.Overlay.Upper, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	inittab := "::sysinit:/etc/init.d/rcS\n::respawn:-/bin/sh\n::shutdown:/bin/echo berth-busybox-shutdown\n"
	if err := os.WriteFile(filepath.Join(etc, "inittab"), []byte(inittab), 0o644); err != nil {
		t.Fatal(err)
	}
	m := start(t, cfg)
	m.WaitPhase(t, container.PhaseRunning, 1)
	return m
}

// attachConsole attaches to m's console and copies what it shows into a
// buffer; the connection is closed when the test ends.
func attachConsole(t *testing.T, m *machine, opts container.AttachOptions) (net.Conn, container.Attached, *lockedBuffer) {
	t.Helper()
	c, err := container.Dial(m.Config.RuntimeDir)
	if err != nil {
		t.Fatal(err)
	}
	conn, at, err := c.AttachConsole(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	out := &lockedBuffer{}
	go func() { _, _ = io.Copy(out, conn) }()
	return conn, at, out
}

// TestConsole attaches several clients to a busybox guest's console shell:
// every reader sees what a command typed by the one writer prints, a second
// writer is refused and told who writes, the writer sizes the console (at
// attach and with Resize; a reader may not), a writer that shuts down its
// writing side goes on reading and lets another write, and clients that go
// leave the machine running; when it stops, every client's stream ends.
func TestConsole(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	m := consoleShellMachine(t)
	_, r1, out1 := attachConsole(t, m, container.AttachOptions{})
	if r1.Writing {
		t.Fatal("a reader was made the writer")
	}
	_, _, out2 := attachConsole(t, m, container.AttachOptions{})
	w, wa, outW := attachConsole(t, m, container.AttachOptions{Write: true, Rows: 33, Cols: 101})
	if !wa.Writing {
		t.Fatalf("the first writer may not write: %+v", wa)
	}
	_, second, _ := attachConsole(t, m, container.AttachOptions{Write: true})
	if second.Writing || second.Writer != fmt.Sprintf("PID %d", os.Getpid()) {
		t.Errorf("second writer: %+v, want refused and told PID %d writes", second, os.Getpid())
	}

	type_ := func(s string) {
		t.Helper()
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	begin := time.Now()
	type_("echo con$((6*7))sole; stty size\n")
	for what, b := range map[string]*lockedBuffer{"reader 1": out1, "reader 2": out2, "writer": outW} {
		waitFor(t, what, b, "con42sole")
	}
	t.Logf("a command typed on the console: its output on all three clients %v later", time.Since(begin))
	waitFor(t, "writer", outW, "33 101")

	c, err := container.Dial(m.Config.RuntimeDir)
	if err != nil {
		t.Fatal(err)
	}
	// This test is the writer's process: its Resize is the writer's.
	if err := c.Resize(context.Background(), 40, 120); err != nil {
		t.Fatal(err)
	}
	type_("stty size\n")
	waitFor(t, "writer after Resize", outW, "40 120")

	// Giving up writing: the next writer may type, the old one still reads.
	if err := w.(*net.UnixConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var w2 net.Conn
	if err := testenv.Poll(5*time.Second, func() error {
		conn, at, err := c.AttachConsole(context.Background(), container.AttachOptions{Write: true})
		if err != nil {
			return err
		}
		if !at.Writing {
			conn.Close()
			return fmt.Errorf("still refused: %+v", at)
		}
		w2 = conn
		return nil
	}); err != nil {
		t.Fatalf("after the writer's CloseWrite: %v", err)
	}
	t.Cleanup(func() { w2.Close() })
	if _, err := w2.Write([]byte("echo after-$((1+1))-half\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "half-closed writer", outW, "after-2-half")
	waitFor(t, "reader 1", out1, "after-2-half")

	// Clients going (as berth console's ^]^]^] closes its connection) leave
	// the machine running.
	w2.Close()
	if err := testenv.Poll(5*time.Second, func() error {
		if err := c.Resize(context.Background(), 20, 60); err == nil {
			return fmt.Errorf("resized with no writer attached")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if st, err := c.Status(context.Background()); err != nil || st.Phase != container.PhaseRunning {
		t.Fatalf("after the clients went: %+v, %v", st, err)
	}
	if err := c.Poweroff(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ex, _ := m.Wait(t); ex.Reason != container.ReasonPoweroff {
		t.Errorf("exit: %v", ex)
	}
	waitFor(t, "reader 2", out2, "berth-busybox-shutdown")
	if l := leaks(t, m.Config); len(l) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
	}
}

// login runs container.Login on m with a pipe for its input; it returns how
// the machine served it, the pty's name, the output and a way to type.
type loginSession struct {
	how, tty string
	out      *lockedBuffer
	in       *io.PipeWriter
	cancel   context.CancelFunc
	done     chan struct{}
	code     int
	err      error
}

func startLogin(t *testing.T, runDir string) *loginSession {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &loginSession{out: &lockedBuffer{}, in: pw, cancel: cancel, done: make(chan struct{})}
	started := make(chan struct{})
	go func() {
		defer close(s.done)
		s.code, s.err = container.Login(ctx, runDir, container.EnterOptions{Stdin: pr, Stdout: s.out, Rows: 30, Cols: 90},
			func(how, tty string) { s.how, s.tty = how, tty; close(started) })
	}()
	t.Cleanup(func() { s.end(t) })
	select {
	case <-started:
	case <-s.done:
		t.Fatalf("login: %d, %v", s.code, s.err)
	case <-time.After(30 * time.Second):
		t.Fatal("login did not start")
	}
	return s
}

func (s *loginSession) send(t *testing.T, text string) {
	t.Helper()
	if _, err := s.in.Write([]byte(text)); err != nil {
		t.Fatal(err)
	}
}

// end detaches (as ^]^]^] does) and waits for Login to return.
func (s *loginSession) end(t *testing.T) {
	s.cancel()
	s.in.Close()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Error("login did not return after its context ended")
	}
}

// TestLoginBusybox logs in to a guest without systemd: its login program on
// a new pty, or root's shell on one when it has none.
func TestLoginBusybox(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	cfg := newConfig(t, "bblogin")
	cfg.Boot = true
	cfg.Hostname = "bb-login"
	overlayRoot(t, &cfg, testenv.BusyboxGuest(t))
	m := start(t, cfg)
	m.WaitPhase(t, container.PhaseRunning, 1)

	s := startLogin(t, cfg.RuntimeDir)
	if s.how != container.LoginProgram {
		t.Errorf("busybox guest with /bin/login: got %q, want %q", s.how, container.LoginProgram)
	}
	waitFor(t, "busybox login", s.out, "bb-login login: ")
	s.end(t)

	// Without a login program: root's shell, on a pty of the machine's.
	if out, code := m.sh(t, "rm /bin/login"); code != 0 {
		t.Fatalf("rm /bin/login: %s", out)
	}
	s = startLogin(t, cfg.RuntimeDir)
	if s.how != container.LoginShell {
		t.Errorf("busybox guest without login: got %q, want %q", s.how, container.LoginShell)
	}
	s.send(t, "tty; echo in-$((40+2)); exit 5\n")
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the shell did not exit: %q", s.out.String())
	}
	if s.code != 5 || s.err != nil || !strings.Contains(s.out.String(), "/dev/pts/") || !strings.Contains(s.out.String(), "in-42") {
		t.Errorf("root's shell: exit %d, %v, output %q", s.code, s.err, s.out.String())
	}
}
