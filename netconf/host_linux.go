package netconf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/google/nftables"
	nlconn "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Host is a handle on one network namespace, "the host" whose bridges, links,
// rules and sysctls netconf manages: the caller's own namespace, or one named by
// path (tests make one and pass it). Its netlink and nftables sockets are bound
// to that namespace when it is opened, so callers never switch threads between
// namespaces. A Host is safe for concurrent use.
type Host struct {
	nsPath string
	ns     netns.NsHandle
	nl     *netlink.Handle
	nft    *nftables.Conn

	// rulesMu serialises ApplyRules: the nftables connection buffers one batch
	// at a time.
	rulesMu sync.Mutex
	// nftBuf is the buffer size nft's socket was made with (see nftBufFor).
	nftBuf int
}

// Open returns a Host working in the network namespace at nsPath (for example
// /run/netns/NAME or /proc/PID/ns/net), or in the caller's own namespace when
// nsPath is empty.
func Open(nsPath string) (*Host, error) {
	var (
		ns  netns.NsHandle
		err error
	)
	if nsPath == "" {
		// The process's namespace, not the calling thread's: a caller that
		// happens to run on a thread locked into another namespace must not
		// make us manage that one.
		ns, err = netns.GetFromPath("/proc/self/ns/net")
	} else {
		ns, err = netns.GetFromPath(nsPath)
	}
	if err != nil {
		return nil, fmt.Errorf("open network namespace %q: %w", nsPath, err)
	}
	h := &Host{nsPath: nsPath, ns: ns}
	h.nl, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("open network namespace %q: netlink: %w", nsPath, err)
	}
	h.nft, err = dialNft(ns, minNftBuf)
	h.nftBuf = minNftBuf
	if err != nil {
		h.nl.Close()
		ns.Close()
		return nil, fmt.Errorf("open network namespace %q: nftables: %w", nsPath, err)
	}
	return h, nil
}

// dialNft opens a lasting nftables connection in the namespace ns whose socket
// takes a batch of up to buf bytes in one send and can queue as much of
// replies: what nft does before a large batch (SO_SNDBUFFORCE and
// SO_RCVBUFFORCE, which root may set past net.core.wmem_max and rmem_max).
func dialNft(ns netns.NsHandle, buf int) (*nftables.Conn, error) {
	return nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting(),
		nftables.WithSockOptions(func(c *nlconn.Conn) error {
			if err := c.SetWriteBuffer(buf); err != nil {
				return err
			}
			return c.SetReadBuffer(buf)
		}))
}

// Close releases the Host's sockets. Nothing it set up is undone.
func (h *Host) Close() error {
	h.nl.Close()
	err := h.nft.CloseLasting()
	if cerr := h.ns.Close(); err == nil {
		err = cerr
	}
	return err
}

// String names the namespace in messages.
func (h *Host) String() string {
	if h.nsPath == "" {
		return "host network namespace"
	}
	return "network namespace " + h.nsPath
}

// inNetns runs fn on an OS thread that has joined the network namespace ns. The
// thread stays locked and so ends with the goroutine: it is never handed back
// to the Go scheduler in a foreign namespace, even when fn panics or switching
// back would fail.
func inNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("join network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// do runs fn in the Host's namespace: directly when that is the process's own,
// else on a thread that joined it (see inNetns). Sockets fn opens stay in that
// namespace for their life, which is how the proxy listens and dials there.
func (h *Host) do(fn func() error) error {
	if h.nsPath == "" {
		return fn()
	}
	return inNetns(h.ns, fn)
}

// setSysctl writes value to /proc/sys/KEY in the Host's namespace; files under
// /proc/sys/net belong to the namespace of the thread that opens them. It does
// nothing when the value is already there, so an unchanged setting never
// triggers the kernel's side effects (turning forwarding on resets per-device
// settings).
func (h *Host) setSysctl(key, value string) error {
	return h.do(func() error { return writeSysctl(key, value) })
}

func writeSysctl(key, value string) error {
	p := filepath.Join("/proc/sys", key)
	if cur, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(cur)) == value {
		return nil
	}
	if err := os.WriteFile(p, []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), value, err)
	}
	return nil
}

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed under it (other links coming and going on a busy host), so
// decisions are never made on a partial list.
func retryDump[T any](ctx context.Context, dump func() (T, error)) (T, error) {
	for i := 0; ; i++ {
		v, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == 20 {
			return v, err
		}
		if err := ctx.Err(); err != nil {
			return v, err
		}
	}
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV)
}
