package netconf

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/vishvananda/netns"
)

// netnsProc is a process in a network namespace of its own that a test made:
// the test's "host", or a stand-in for a machine's payload. The namespace ends
// with the process, taking every link in it along, so a failed test leaves
// nothing behind in the real host's namespace.
type netnsProc struct {
	pid  int
	path string // /proc/PID/ns/net
}

func newNetns(t *testing.T) netnsProc {
	t.Helper()
	testenv.SkipUnlessRoot(t)
	// cat holds the namespace until its stdin closes: when the test ends, or
	// when the test binary dies, so nothing outlives a crashed run. (Pdeathsig
	// would not do: it fires when the forking OS thread exits, and Go ends
	// threads that were locked into other namespaces.)
	cmd := exec.Command("cat")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a process in a new network namespace: %v", err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	return netnsProc{pid: cmd.Process.Pid, path: fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)}
}

// testHost makes a network namespace and opens a Host on it with lo up.
func testHost(t *testing.T) (*Host, netnsProc) {
	t.Helper()
	p := newNetns(t)
	h, err := Open(p.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if err := SetupLoopback(context.Background(), p.pid); err != nil {
		t.Fatal(err)
	}
	return h, p
}

// sh runs a command in the network namespace of pid (nsenter) and returns its
// combined output; tests observe with the same tools a person would use.
func sh(t *testing.T, pid int, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"-t", fmt.Sprint(pid), "-n", "--"}, args...)
	out, err := exec.Command("nsenter", full...).CombinedOutput()
	return string(out), err
}

func mustSh(t *testing.T, pid int, args ...string) string {
	t.Helper()
	out, err := sh(t, pid, args...)
	if err != nil {
		t.Fatalf("%s (in netns of %d): %v\n%s", strings.Join(args, " "), pid, err, out)
	}
	return out
}

func ping(t *testing.T, pid int, addr netip.Addr) {
	t.Helper()
	// One retry: a veth's carrier comes up a moment after the link.
	// busybox's ping: busybox-static is one of the project's dependencies.
	args := []string{"busybox", "ping", "-c", "1", "-W", "2", addr.String()}
	if out, err := sh(t, pid, args...); err != nil {
		if out, err = sh(t, pid, args...); err != nil {
			t.Fatalf("ping %s from netns of %d: %v\n%s", addr, pid, err, out)
		}
	}
}

// inPid runs fn on a thread in the network namespace of pid; sockets fn makes
// stay in that namespace.
func inPid(pid int, fn func() error) error {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return err
	}
	defer ns.Close()
	return inNetns(ns, fn)
}

// listenIn opens a TCP listener in the network namespace of pid that answers
// every connection with "hello from NAME to LOCAL, you are REMOTE".
func listenIn(t *testing.T, pid int, name, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := inPid(pid, func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello from %s to %s, you are %s\n", name, c.LocalAddr(), c.RemoteAddr())
			c.Close()
		}
	}()
	return ln
}

// dialIn connects from the network namespace of pid and returns the greeting.
func dialIn(pid int, addr string) (string, error) {
	got, err := askIn(pid, addr, "")
	return strings.TrimSpace(got), err
}

// udpEchoIn answers every datagram it gets in the network namespace of pid
// with "NAME: " and the datagram.
func udpEchoIn(t *testing.T, pid int, name, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := inPid(pid, func() (err error) { pc, err = net.ListenPacket("udp", addr); return }); err != nil {
		t.Fatalf("listen on udp %s in %s: %v", addr, name, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte(name+": "), buf[:n]...), from)
		}
	}()
}

// udpAskIn sends msg from the network namespace of pid and returns the answer.
func udpAskIn(pid int, addr, msg string) (string, error) {
	var c net.Conn
	if err := inPid(pid, func() (err error) { c, err = net.Dial("udp", addr); return }); err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for try := 0; try < 3; try++ {
		if _, err := c.Write([]byte(msg)); err != nil {
			return "", err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", fmt.Errorf("udp %s: no answer", addr)
}

// askIn connects from the network namespace of pid, sends req (if any) and
// returns everything the server says until it closes.
func askIn(pid int, addr, req string) (string, error) {
	var c net.Conn
	if err := inPid(pid, func() (err error) { c, err = net.DialTimeout("tcp", addr, 3*time.Second); return }); err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if req != "" {
		if _, err := io.WriteString(c, req); err != nil {
			return "", err
		}
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// sysctl reads /proc/sys/KEY in the Host's namespace.
func (h *Host) sysctl(key string) (string, error) {
	var v string
	err := h.do(func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

func itoa(i int) string { return fmt.Sprint(i) }
