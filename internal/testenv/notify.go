package testenv

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// NotifySocket listens, as a service manager does, on a fresh abstract datagram
// socket and returns its $NOTIFY_SOCKET address ("@…") and a function that
// returns the next message sent to it, failing t after 5 s without one.
func NotifySocket(t testing.TB) (addr string, next func() string) {
	t.Helper()
	addr = "@" + UniqueName("berth-test-notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return addr, func() string {
		t.Helper()
		buf := make([]byte, 4096)
		_ = l.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := l.Read(buf)
		if err != nil {
			t.Fatalf("notify socket %s: %v", addr, err)
		}
		return string(buf[:n])
	}
}

// SendNotify is a re-exec stage for test binaries bound into a machine: it
// sends each argument as one datagram to $NOTIFY_SOCKET, as systemd-notify
// does (busybox has none), and exits 0, or 1 on a failure.
func SendNotify() {
	c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "notify:", err)
		os.Exit(1)
	}
	for _, m := range os.Args[1:] {
		if _, err := c.Write([]byte(m)); err != nil {
			fmt.Fprintln(os.Stderr, "notify:", err)
			os.Exit(1)
		}
	}
	os.Exit(0)
}
