package netconf

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// hostResolvConf is where the host's own resolvers are read from when a
// network names no upstream servers.
var hostResolvConf = "/etc/resolv.conf"

// Resolver is a network's DNS server, answering on its gateway addresses: the
// machines of the network by name (from their name records) and the reverse
// lookups of their addresses, and every other query forwarded upstream.
type Resolver struct {
	h    *Host
	cfg  ResolverConfig
	log  *slog.Logger
	cur  atomic.Pointer[names]
	srvs []*dns.Server // TCP
	udp  []*net.UDPConn

	mu       sync.Mutex
	buckets  map[netip.Addr]*bucket
	inflight map[netip.Addr]int
	tcpConns map[netip.Addr]int
	forwards int

	upMu      sync.Mutex
	upstreams []string // host:port
	upMtime   time.Time

	done      chan struct{}
	closeOnce sync.Once
	err       error
}

// ServeResolver starts the network's resolver in the Host's namespace: it
// listens on port 53 (UDP and TCP) of each of cfg.Listen, watches
// cfg.NamesDir, and runs until Close, or until its names directory is
// removed (the network's runtime directory is gone: nothing would ever tell
// it about machines again). Equivalent to a dnsmasq per bridge with a hosts
// file that the machines keep up to date.
//
// The listening sockets use IP_FREEBIND, so the resolver may start before the
// bridge has its addresses.
func (h *Host) ServeResolver(ctx context.Context, cfg ResolverConfig, log *slog.Logger) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	r := &Resolver{h: h, cfg: cfg, log: log.With("network", cfg.Network), buckets: map[netip.Addr]*bucket{},
		inflight: map[netip.Addr]int{}, tcpConns: map[netip.Addr]int{}, done: make(chan struct{})}
	if err := os.MkdirAll(cfg.NamesDir, 0o755); err != nil {
		return nil, fmt.Errorf("network %q: resolver: %w", cfg.Network, err)
	}
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("network %q: resolver: watch names: %w", cfg.Network, err)
	}
	if err := watcher.Add(cfg.NamesDir); err != nil {
		watcher.Close()
		return nil, fmt.Errorf("network %q: resolver: watch %s: %w", cfg.Network, cfg.NamesDir, err)
	}
	r.reload()
	port := cfg.Port
	if port == 0 {
		port = 53
	}
	for _, a := range cfg.Listen {
		addr := netip.AddrPortFrom(a, port).String()
		var pc net.PacketConn
		var ln net.Listener
		err := h.do(func() error {
			lc := net.ListenConfig{Control: freebind}
			var err error
			if pc, err = lc.ListenPacket(ctx, "udp", addr); err != nil {
				return err
			}
			// Room for a burst: a flood from one machine must not fill the
			// socket's queue before the limiter drops it.
			_ = pc.(*net.UDPConn).SetReadBuffer(4 << 20)
			if ln, err = lc.Listen(ctx, "tcp", addr); err != nil {
				pc.Close()
			}
			return err
		})
		if err != nil {
			r.Close()
			watcher.Close()
			if errors.Is(err, unix.EADDRINUSE) {
				err = fmt.Errorf("%w: another DNS server (dnsmasq, a resolver on 0.0.0.0:53?) has the port; stop it or turn the network's resolver off (resolver: {enabled: false})", err)
			}
			return nil, fmt.Errorf("network %q: resolver: listen on %s: %w", cfg.Network, addr, err)
		}
		tcp := &dns.Server{Listener: &limitListener{Listener: ln, r: r}, Handler: dns.HandlerFunc(r.serveTCP), MaxTCPQueries: 64,
			ReadTimeout: 2 * time.Second, IdleTimeout: func() time.Duration { return 5 * time.Second }}
		r.srvs = append(r.srvs, tcp)
		started := make(chan struct{})
		tcp.NotifyStartedFunc = func() { close(started) }
		go func() {
			if err := tcp.ActivateAndServe(); err != nil {
				r.log.Warn("resolver stopped serving", "addr", addr, "proto", "tcp", "err", err)
			}
		}()
		<-started
		r.udp = append(r.udp, pc.(*net.UDPConn))
		for range udpReaders {
			go r.serveUDP(pc.(*net.UDPConn))
		}
	}
	go r.watch(watcher)
	r.log.Info("resolver started", "listen", cfg.Listen, "domain", cfg.Domain)
	return r, nil
}

// freebind lets a socket bind an address the host does not have yet.
func freebind(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if network == "udp6" || network == "tcp6" {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// Done is closed when the resolver has stopped.
func (r *Resolver) Done() <-chan struct{} { return r.done }

// Err is why the resolver stopped on its own, after Done.
func (r *Resolver) Err() error { return r.err }

// Close stops the resolver.
func (r *Resolver) Close() error {
	r.stop(nil)
	return nil
}

func (r *Resolver) stop(err error) {
	r.closeOnce.Do(func() {
		r.err = err
		for _, s := range r.srvs {
			_ = s.Shutdown()
		}
		for _, c := range r.udp {
			_ = c.Close()
		}
		close(r.done)
	})
}

// watch reloads the names when a record changes, and every two seconds
// anyway: that drops the record of a supervisor that died.
func (r *Resolver) watch(w *fsnotify.Watcher) {
	defer w.Close()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.done:
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Name == r.cfg.NamesDir && ev.Has(fsnotify.Remove) {
				r.stop(fmt.Errorf("network %q: names directory %s was removed", r.cfg.Network, r.cfg.NamesDir))
				return
			}
			r.reload()
		case err := <-w.Errors:
			r.log.Warn("watching names", "err", err)
			r.reload()
		case <-tick.C:
			if _, err := os.Stat(r.cfg.NamesDir); errors.Is(err, os.ErrNotExist) {
				r.stop(fmt.Errorf("network %q: names directory %s was removed", r.cfg.Network, r.cfg.NamesDir))
				return
			}
			r.reload()
			r.pruneBuckets()
		}
	}
}

func (r *Resolver) reload() {
	recs, err := readNameRecords(r.cfg.NamesDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		r.log.Warn("read names", "err", err)
		return
	}
	r.cur.Store(newNames(r.cfg.Domain, r.cfg.Subnets, recs))
}

func (r *Resolver) pruneBuckets() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for a, b := range r.buckets {
		if now.Sub(b.last) > time.Minute {
			delete(r.buckets, a)
		}
	}
}

// allow spends one of the source's tokens.
func (r *Resolver) allow(src netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buckets[src]
	if b == nil {
		if len(r.buckets) > 65536 {
			return false // a table that large is an attack from spoofed sources
		}
		b = &bucket{}
		r.buckets[src] = b
	}
	return b.take(time.Now(), clientRate, clientBurst)
}

// udpReaders is how many goroutines read each UDP socket: while one
// handles a query, the others keep draining the socket's queue, so a flood
// from one machine is dropped (by its rate) as fast as it comes.
const udpReaders = 4

// serveUDP reads queries from one UDP socket until it is closed. A source
// over its rate is dropped before any work is spent on the query.
func (r *Resolver) serveUDP(c *net.UDPConn) {
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !r.allow(src.Addr().Unmap()) {
			continue
		}
		req := new(dns.Msg)
		if err := req.Unpack(buf[:n]); err != nil || req.Response {
			continue // not a query: no answer, no work
		}
		from := src.Addr().Unmap()
		m := r.local(from, req)
		if m == nil {
			if !r.acquire(from) {
				m = rcodeReply(req, dns.RcodeServerFailure)
			} else {
				// Forwarding waits for the upstream: not in the reader.
				go func() {
					defer r.release(from)
					writeUDP(c, src, req, r.exchange(req, false))
				}()
				continue
			}
		}
		writeUDP(c, src, req, m)
	}
}

func writeUDP(c *net.UDPConn, to netip.AddrPort, req, m *dns.Msg) {
	m.Truncate(udpSize(req))
	if b, err := m.Pack(); err == nil {
		_, _ = c.WriteToUDPAddrPort(b, to)
	}
}

func rcodeReply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	return m
}

// limitListener bounds the open TCP connections, in all and per source.
type limitListener struct {
	net.Listener
	r *Resolver
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := addrOf(c.RemoteAddr())
		l.r.mu.Lock()
		total := 0
		for _, n := range l.r.tcpConns {
			total += n
		}
		ok := total < maxTCPConns && l.r.tcpConns[src] < maxClientTCPConns
		if ok {
			l.r.tcpConns[src]++
		}
		l.r.mu.Unlock()
		if !ok {
			c.Close()
			continue
		}
		return &countedConn{Conn: c, r: l.r, src: src}, nil
	}
}

type countedConn struct {
	net.Conn
	r    *Resolver
	src  netip.Addr
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.r.mu.Lock()
		if c.r.tcpConns[c.src]--; c.r.tcpConns[c.src] <= 0 {
			delete(c.r.tcpConns, c.src)
		}
		c.r.mu.Unlock()
	})
	return c.Conn.Close()
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func (r *Resolver) serveTCP(w dns.ResponseWriter, req *dns.Msg) {
	src := addrOf(w.RemoteAddr())
	if !r.allow(src) {
		w.Close()
		return
	}
	m := r.local(src, req)
	if m == nil {
		if !r.acquire(src) {
			m = rcodeReply(req, dns.RcodeServerFailure)
		} else {
			m = r.exchange(req, true)
			r.release(src)
		}
	}
	_ = w.WriteMsg(m)
}

// local is the answer to a query that the resolver gives itself: REFUSED
// from outside the network, the machines' names and the reverse lookups of
// the network's addresses from the records; nil for a query to forward.
func (r *Resolver) local(src netip.Addr, req *dns.Msg) *dns.Msg {
	n := r.cur.Load()
	switch {
	case !n.inSubnets(src):
		return rcodeReply(req, dns.RcodeRefused)
	case req.Opcode != dns.OpcodeQuery:
		return rcodeReply(req, dns.RcodeNotImplemented)
	}
	return n.answer(req)
}

// udpSize is how large a UDP reply to req may be.
func udpSize(req *dns.Msg) int {
	if o := req.IsEdns0(); o != nil {
		return max(int(o.UDPSize()), dns.MinMsgSize)
	}
	return dns.MinMsgSize
}

// acquire takes one of the forwarding slots, within the bounds in all and
// per source; false when there is none.
func (r *Resolver) acquire(src netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.forwards >= maxForwards || r.inflight[src] >= maxClientForwards {
		return false
	}
	r.forwards++
	r.inflight[src]++
	return true
}

func (r *Resolver) release(src netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forwards--
	if r.inflight[src]--; r.inflight[src] <= 0 {
		delete(r.inflight, src)
	}
}

// exchange asks the upstream servers, one after the other; SERVFAIL when
// none answers.
func (r *Resolver) exchange(req *dns.Msg, tcp bool) *dns.Msg {
	proto := "udp"
	if tcp {
		proto = "tcp"
	}
	q := req.Copy()
	// A fresh ID towards the upstream: the client's own is not a secret
	// between it and us.
	var id [2]byte
	_, _ = rand.Read(id[:])
	q.Id = binary.BigEndian.Uint16(id[:])
	c := &dns.Client{Net: proto, Timeout: forwardTimeout, UDPSize: dns.DefaultMsgSize}
	for _, up := range r.upstreamList() {
		var conn net.Conn
		err := r.h.do(func() error {
			var err error
			conn, err = net.DialTimeout(proto, up, forwardTimeout)
			return err
		})
		if err != nil {
			continue
		}
		resp, _, err := c.ExchangeWithConn(q, &dns.Conn{Conn: conn, UDPSize: dns.DefaultMsgSize})
		conn.Close()
		if err != nil || resp == nil {
			continue
		}
		resp.Id = req.Id
		if !tcp {
			resp.Truncate(udpSize(req))
		}
		return resp
	}
	return rcodeReply(req, dns.RcodeServerFailure)
}

// upstreamList is where forwarded queries go: the configured servers, or the
// host's resolv.conf's nameservers (loopback ones included: the resolver
// runs in the host's namespace, where 127.0.0.53 answers), read again when
// the file changes.
func (r *Resolver) upstreamList() []string {
	if len(r.cfg.Upstreams) > 0 {
		out := make([]string, len(r.cfg.Upstreams))
		for i, a := range r.cfg.Upstreams {
			out[i] = netip.AddrPortFrom(a, 53).String()
		}
		return out
	}
	r.upMu.Lock()
	defer r.upMu.Unlock()
	st, err := os.Stat(hostResolvConf)
	if err != nil {
		return r.upstreams
	}
	if !st.ModTime().Equal(r.upMtime) || r.upstreams == nil {
		cc, err := dns.ClientConfigFromFile(hostResolvConf)
		if err == nil {
			r.upstreams = nil
			for _, s := range cc.Servers {
				a, err := netip.ParseAddr(s)
				if err != nil || a.IsUnspecified() || r.isSelf(a) {
					continue // never forward to ourselves
				}
				r.upstreams = append(r.upstreams, netip.AddrPortFrom(a, uint16(atoiOr(cc.Port, 53))).String())
			}
			r.upMtime = st.ModTime()
		}
	}
	return r.upstreams
}

func (r *Resolver) isSelf(a netip.Addr) bool {
	for _, l := range r.cfg.Listen {
		if l == a.Unmap() {
			return true
		}
	}
	return false
}

func atoiOr(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65536 {
		return n
	}
	return def
}
