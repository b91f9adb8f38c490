package netconf

import (
	"context"
	"errors"
	"fmt"
	"github.com/berthd/berth/internal/revert"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// LoopbackProxy answers port forwards on the host's [::1], the one address
// the kernel cannot forward from: Linux has no route_localnet for IPv6, so
// after DNAT the answers, addressed to ::1, arrive on the bridge and are
// dropped as martians (ip6_rcv refuses loopback addresses from other devices).
// So berth does what Docker's docker-proxy and Incus's proxy devices do for
// every forward, but only for this case: it listens on [::1]:HOSTPORT itself and
// relays each TCP connection (and each UDP client's datagrams) to the machine,
// over IPv6 when the machine has an IPv6 address for the forward, and over
// IPv4 when it has only IPv4 (a user who forwards a port expects it on
// `localhost`, whichever family `localhost` resolves to first). The machine
// sees the bridge's gateway address as the client.
//
// The proxy lives in the process that starts it and stops with it, so it
// belongs to something that lives as long as the machines (berthd, or the
// machine's supervisor). ApplyRules leaves [::1] out of the kernel's rules so
// that the two never compete for a connection.
type LoopbackProxy struct {
	h       *Host
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	closers map[io.Closer]struct{}
	fwds    []Forward
}

// udpIdle is how long a UDP client's relay lives without traffic.
const udpIdle = 60 * time.Second

// ProxyLoopback starts a LoopbackProxy for those of fwds that the kernel's
// rules leave out: IPv6 forwards for every host address or for ::1, and IPv4
// forwards without a host address whose machine has no IPv6 forward for the
// same port (an IPv4-only machine still answers on [::1]). It returns a proxy
// with nothing to do when there are none. A host port already taken on ::1 is
// an error naming the machine, and nothing is left listening; a host without
// ::1 (IPv6 disabled) only skips the IPv4-only relays.
func (h *Host) ProxyLoopback(ctx context.Context, fwds []Forward) (*LoopbackProxy, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &LoopbackProxy{h: h, ctx: ctx, cancel: cancel, closers: map[io.Closer]struct{}{}}
	r := revert.New()
	defer r.Fail()
	r.Add(func() { _ = p.Close() })
	for _, f := range loopbackForwards(fwds) {
		if f.Proto != "tcp" && f.Proto != "udp" {
			return nil, fmt.Errorf("machine %q: port forward %s: protocol %q: want tcp or udp: %w", f.Machine, f, f.Proto, ErrInvalid)
		}
		addr := netip.AddrPortFrom(netip.IPv6Loopback(), f.HostPort).String()
		var err error
		if f.Proto == "tcp" {
			var ln net.Listener
			err = h.do(func() (err error) { ln, err = net.Listen("tcp6", addr); return })
			if err == nil {
				p.track(ln)
				p.wg.Add(1)
				go p.serveTCP(ln, f)
			}
		} else {
			var pc net.PacketConn
			err = h.do(func() (err error) { pc, err = net.ListenPacket("udp6", addr); return })
			if err == nil {
				p.track(pc)
				p.wg.Add(1)
				go p.serveUDP(pc.(*net.UDPConn), f)
			}
		}
		if err != nil && f.Addr.Is4() && errors.Is(err, syscall.EADDRNOTAVAIL) {
			slog.Debug("loopback proxy: no ::1 on this host; the forward answers on 127.0.0.1 only", "machine", f.Machine, "forward", f.String())
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("machine %q: port forward %s: listen on %s/%s: %w", f.Machine, f, addr, f.Proto, err)
		}
		p.fwds = append(p.fwds, f)
	}
	r.Success()
	return p, nil
}

// loopbackForwards picks the forwards [::1] needs a relay for, one per
// protocol and host port: an IPv6 forward for every host address or for ::1;
// else an IPv4 forward for every host address.
func loopbackForwards(fwds []Forward) []Forward {
	type key struct {
		proto string
		port  uint16
	}
	var out []Forward
	has6 := map[key]bool{}
	for _, f := range fwds {
		if f.Addr.Is6() && (!f.HostAddr.IsValid() || f.HostAddr == netip.IPv6Loopback()) {
			has6[key{f.Proto, f.HostPort}] = true
			out = append(out, f)
		}
	}
	seen4 := map[key]bool{}
	for _, f := range fwds {
		k := key{f.Proto, f.HostPort}
		if f.Addr.Is4() && !f.HostAddr.IsValid() && !has6[k] && !seen4[k] {
			seen4[k] = true
			out = append(out, f)
		}
	}
	return out
}

// Forwards returns the forwards the proxy serves.
func (p *LoopbackProxy) Forwards() []Forward { return p.fwds }

// Close stops listening and ends every relayed connection.
func (p *LoopbackProxy) Close() error {
	p.cancel()
	p.mu.Lock()
	for c := range p.closers {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

func (p *LoopbackProxy) track(c io.Closer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		_ = c.Close()
		return false
	}
	p.closers[c] = struct{}{}
	return true
}

func (p *LoopbackProxy) untrack(c io.Closer) {
	p.mu.Lock()
	delete(p.closers, c)
	p.mu.Unlock()
	_ = c.Close()
}

// dial connects to the machine from the Host's namespace.
func (p *LoopbackProxy) dial(network string, f Forward) (net.Conn, error) {
	var c net.Conn
	err := p.h.do(func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.DialContext(p.ctx, network, netip.AddrPortFrom(f.Addr, f.Port).String())
		return
	})
	return c, err
}

func (p *LoopbackProxy) serveTCP(ln net.Listener, f Forward) {
	defer p.wg.Done()
	for {
		client, err := ln.Accept()
		if err != nil {
			if p.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				slog.Warn("loopback proxy: accept", "machine", f.Machine, "forward", f.String(), "err", err)
			}
			return
		}
		if !p.track(client) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(client)
			upstream, err := p.dial("tcp", f)
			if err != nil {
				slog.Warn("loopback proxy: connect to machine", "machine", f.Machine, "forward", f.String(), "err", err)
				return
			}
			if !p.track(upstream) {
				return
			}
			defer p.untrack(upstream)
			relay(client, upstream)
		}()
	}
}

// relay copies both ways until both directions are done, passing on each
// half-close, so request/response protocols that shut down their sending side
// (HTTP/1.0 clients, `nc -N`) keep working.
func relay(a, b net.Conn) {
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(a, b)
	go pipe(b, a)
	<-done
	<-done
}

// serveUDP relays datagrams: each client address gets its own connected
// socket towards the machine, whose answers go back to that client, until it
// has been idle for udpIdle.
func (p *LoopbackProxy) serveUDP(pc *net.UDPConn, f Forward) {
	defer p.wg.Done()
	var mu sync.Mutex
	flows := map[netip.AddrPort]net.Conn{}
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if p.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				slog.Warn("loopback proxy: read", "machine", f.Machine, "forward", f.String(), "err", err)
			}
			return
		}
		mu.Lock()
		up, ok := flows[from]
		mu.Unlock()
		if !ok {
			if up, err = p.dial("udp", f); err != nil {
				slog.Warn("loopback proxy: connect to machine", "machine", f.Machine, "forward", f.String(), "err", err)
				continue
			}
			if !p.track(up) {
				return
			}
			mu.Lock()
			flows[from] = up
			mu.Unlock()
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer func() {
					mu.Lock()
					delete(flows, from)
					mu.Unlock()
					p.untrack(up)
				}()
				rb := make([]byte, 64<<10)
				for {
					_ = up.SetReadDeadline(time.Now().Add(udpIdle))
					n, err := up.Read(rb)
					if err != nil {
						return
					}
					_, _ = pc.WriteToUDPAddrPort(rb[:n], from)
				}
			}()
		}
		_ = up.SetReadDeadline(time.Now().Add(udpIdle))
		_, _ = up.Write(buf[:n])
	}
}
