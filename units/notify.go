package units

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify(3) messages to the service manager of berthd
// (Type=notify). Without NOTIFY_SOCKET every method is a no-op, so berthd calls
// it the same way under systemd and in a terminal.
//
// It is berth's only sd_notify client of its own, because go-systemd's
// daemon.SdNotify cannot serve berthd: it reads $NOTIFY_SOCKET at every call,
// and berthd must take the variable out of its environment once, at start,
// before it starts any child. The environment is the whole process's, so
// putting the variable back around each message would hand it to a supervisor
// started meanwhile. Notifier therefore keeps the socket it dialled at start.
// The supervisor, which keeps its $NOTIFY_SOCKET, sends with daemon.SdNotify
// (container's notifyOwnManager).
type Notifier struct {
	mu       sync.Mutex
	conn     *net.UnixConn
	watchdog time.Duration
}

// NewNotifier reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID and removes them
// from the environment, so the supervisors berthd starts do not inherit them
// (systemd would reject their messages, or worse, take their READY=1 for ours).
func NewNotifier() (*Notifier, error) {
	n := &Notifier{}
	sock := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	// A WATCHDOG_USEC that is malformed, or meant for another PID, is no
	// watchdog for berthd: the error only says which.
	n.watchdog, _ = daemon.SdWatchdogEnabled(true)
	if sock == "" {
		return n, nil
	}
	// "@name" is an abstract socket: Go's net package turns the "@" into the
	// leading NUL itself (go-systemd dials the same way).
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return n, fmt.Errorf("sd_notify: connect to %s: %w", sock, err)
	}
	n.conn = conn
	return n, nil
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.conn != nil }

// Notify sends one message, e.g. "READY=1\nSTATUS=3 machines running".
func (n *Notifier) Notify(state string) error {
	if !n.Enabled() {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := n.conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready tells systemd that berthd has started: after the first reconcile, so
// units ordered after berthd.service (and machines.target) see machines running.
func (n *Notifier) Ready(status string) error {
	return n.Notify(daemon.SdNotifyReady + "\nSTATUS=" + status + "\nMAINPID=" + strconv.Itoa(os.Getpid()))
}

// Status sets the one-line status `systemctl status berthd` shows.
func (n *Notifier) Status(status string) error { return n.Notify("STATUS=" + status) }

// Stopping tells systemd that berthd is shutting down.
func (n *Notifier) Stopping() error { return n.Notify(daemon.SdNotifyStopping) }

// Reloading tells systemd berthd reloads its configuration; send Ready when done.
func (n *Notifier) Reloading() error {
	return n.Notify(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec())
}

// ExtendTimeout sends EXTEND_TIMEOUT_USEC: systemd then lets the current start
// (or stop) run until d from now, even past TimeoutStartSec; without a further
// extension it times out at the later of the two. berthd calls it every 30 s
// during its first reconcile, which may build images, until it sends READY=1.
func (n *Notifier) ExtendTimeout(d time.Duration) error {
	return n.Notify("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}

// WatchdogInterval is the WatchdogSec systemd set for berthd, or 0.
func (n *Notifier) WatchdogInterval() time.Duration { return n.watchdog }

// Watchdog pings systemd's watchdog at half its interval until ctx ends. alive is
// asked before each ping; a berthd whose reconcile loop is stuck returns false,
// skips the ping, and is restarted by systemd (Restart=on-failure) without its
// machines being touched (KillMode=process).
func (n *Notifier) Watchdog(ctx context.Context, alive func() bool) {
	if !n.Enabled() || n.watchdog == 0 {
		return
	}
	t := time.NewTicker(n.watchdog / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if alive == nil || alive() {
				_ = n.Notify(daemon.SdNotifyWatchdog)
			}
		}
	}
}

// Close closes the socket.
func (n *Notifier) Close() error {
	if !n.Enabled() {
		return nil
	}
	return n.conn.Close()
}
