// Package ocitest builds OCI images from trees on disk and serves them from
// go-containerregistry's in-process registry, for the tests of berthd and for
// make bench. It is apart from testenv so that the packages testenv serves do
// not all link a registry.
package ocitest

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"
)

// Registry is an in-memory registry served over plain HTTP on 127.0.0.1: on
// a listener in this network namespace (Host, where Push writes) and on any
// others given to Serve (a berthd in a namespace of its own pulls from one
// there). Every listener serves the same repositories.
type Registry struct {
	// Host is 127.0.0.1:PORT of the first listener.
	Host string

	reg  http.Handler
	wrap atomic.Pointer[func(http.Handler) http.Handler]

	mu      sync.Mutex
	servers []*http.Server
}

// NewRegistry starts a registry on 127.0.0.1 with a port of its own.
func NewRegistry() (*Registry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Registry{Host: l.Addr().String(), reg: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	r.Serve(l)
	return r, nil
}

// Serve answers on l too (until Close, or the returned server's Close).
func (r *Registry) Serve(l net.Listener) *http.Server {
	srv := &http.Server{Handler: http.HandlerFunc(r.serveHTTP), ErrorLog: log.New(io.Discard, "", 0)}
	r.mu.Lock()
	r.servers = append(r.servers, srv)
	r.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
	return srv
}

func (r *Registry) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if wrap := r.wrap.Load(); wrap != nil {
		(*wrap)(r.reg).ServeHTTP(w, req)
		return
	}
	r.reg.ServeHTTP(w, req)
}

// Wrap puts wrap in front of the registry on every listener (nil: nothing):
// a stall, a dropped connection, a corrupted blob.
func (r *Registry) Wrap(wrap func(http.Handler) http.Handler) {
	if wrap == nil {
		r.wrap.Store(nil)
		return
	}
	r.wrap.Store(&wrap)
}

// Close stops every listener and drops every connection.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.servers {
		_ = s.Close()
	}
	r.servers = nil
}

// Push writes img as repoTag (debian:12) through Host and returns its
// manifest's digest.
func (r *Registry) Push(repoTag string, img v1.Image) (v1.Hash, error) {
	ref, err := name.ParseReference(r.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(ref, img); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return img.Digest()
}

// ListenInNetns listens on addr (127.0.0.1:0) in the network namespace at
// nsPath (/run/netns/NAME): the socket stays there, and this process serves
// it. Equivalent to `ip netns exec NAME` for one socket. The thread that
// enters the namespace is given up when it cannot come back.
func ListenInNetns(nsPath, addr string) (net.Listener, error) {
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open own network namespace: %w", err)}
			return
		}
		defer unix.Close(self)
		ns, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: &os.PathError{Op: "open", Path: nsPath, Err: err}}
			return
		}
		defer unix.Close(ns)
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("setns %s: %w", nsPath, err)}
			return
		}
		l, lerr := net.Listen("tcp", addr)
		if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
			// Still locked: the runtime ends this thread with the goroutine.
			if l != nil {
				l.Close()
			}
			ch <- result{err: fmt.Errorf("setns back from %s: %w", nsPath, err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{l, lerr}
	}()
	res := <-ch
	return res.l, res.err
}
