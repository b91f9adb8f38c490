package testenv

import (
	"net"
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
