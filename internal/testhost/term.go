package testhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Term is a command running inside the test host on a terminal of its own, as a
// person at a terminal would run it (machinectl login, an interactive shell):
// the test types with Send and reads the screen with Expect.
type Term struct {
	host   string
	args   string
	master *os.File
	cmd    *exec.Cmd
	exited chan struct{}

	mu  sync.Mutex
	out bytes.Buffer
	// seen is how much of out Expect has consumed.
	seen int
}

// Terminal starts args inside the host (in all its namespaces, as Exec does) with
// a new pty of the outer machine as its controlling terminal and standard input,
// output and error. Close ends it.
func (h *Host) Terminal(ctx context.Context, args ...string) (*Term, error) {
	if h.leader == 0 {
		return nil, fmt.Errorf("test host %s: not booted", h.Name)
	}
	master, slave, err := openPty()
	if err != nil {
		return nil, fmt.Errorf("test host %s: %w", h.Name, err)
	}
	defer slave.Close()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(h.leader), "-a", "--"}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.Env = append(os.Environ(), "TERM=vt220")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		master.Close()
		return nil, fmt.Errorf("test host %s: %s: %w", h.Name, strings.Join(args, " "), err)
	}
	t := &Term{host: h.Name, args: strings.Join(args, " "), master: master, cmd: cmd, exited: make(chan struct{})}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			t.mu.Lock()
			t.out.Write(buf[:n])
			t.mu.Unlock()
			if err != nil {
				// EIO once the last holder of the slave has gone.
				return
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(t.exited) }()
	return t, nil
}

// openPty opens a new pty of the outer machine: its master and slave.
func openPty() (master, slave *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	master = os.NewFile(uintptr(fd), "ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock the pty: %w", err)
	}
	_ = unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80})
	sfd, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if e != 0 {
		master.Close()
		return nil, nil, fmt.Errorf("open the pty's slave: %w", e)
	}
	return master, os.NewFile(sfd, "pts"), nil
}

// Send types s (use "\r" for Enter).
func (t *Term) Send(s string) error {
	_, err := t.master.Write([]byte(s))
	return err
}

// Expect waits until want appears in what the command wrote since the last
// match, and returns that output up to and including want. It fails after
// timeout, or when the command exits without writing it.
func (t *Term) Expect(want string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		t.mu.Lock()
		rest := t.out.String()[t.seen:]
		if i := strings.Index(rest, want); i >= 0 {
			t.seen += i + len(want)
			t.mu.Unlock()
			return rest[:i+len(want)], nil
		}
		t.mu.Unlock()
		select {
		case <-t.exited:
			// Whatever it wrote last may still be in the pty.
			time.Sleep(50 * time.Millisecond)
			t.mu.Lock()
			rest = t.out.String()[t.seen:]
			t.mu.Unlock()
			if strings.Contains(rest, want) {
				continue
			}
			return rest, fmt.Errorf("test host %s: %s exited (%v) before writing %q", t.host, t.args, t.cmd.ProcessState, want)
		default:
		}
		if time.Now().After(deadline) {
			return rest, fmt.Errorf("test host %s: %q did not appear in %v", t.host, want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Output is everything the command wrote so far.
func (t *Term) Output() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.out.String()
}

// Wait waits up to timeout for the command to exit by itself.
func (t *Term) Wait(timeout time.Duration) error {
	select {
	case <-t.exited:
		if !t.cmd.ProcessState.Success() {
			return fmt.Errorf("test host %s: %s: %v", t.host, t.args, t.cmd.ProcessState)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("test host %s: %s still runs after %v", t.host, t.args, timeout)
	}
}

// Close ends the command if it still runs (SIGHUP, as a closed terminal would,
// then SIGKILL) and closes the pty.
func (t *Term) Close() error {
	var err error
	select {
	case <-t.exited:
	default:
		_ = t.cmd.Process.Signal(syscall.SIGHUP)
		select {
		case <-t.exited:
		case <-time.After(5 * time.Second):
			_ = t.cmd.Process.Kill()
			<-t.exited
			err = errors.New("killed")
		}
	}
	t.master.Close()
	if err != nil {
		return fmt.Errorf("test host %s: %s: %w", t.host, t.args, err)
	}
	return nil
}
