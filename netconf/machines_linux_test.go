package netconf

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
)

// The test binary is also the machines' init stage (package container
// re-executes it), as runc's integration tests do.
func TestMain(m *testing.M) {
	container.Reexec()
	os.Exit(m.Run())
}

// bootedMachine is a real machine run by package container's supervisor in
// this process, its network set up by the Network hook.
type bootedMachine struct {
	*machinetest.Machine
	leader int
}

// bootMachine starts a machine and returns once its init runs. network is the
// supervisor's Network hook: Attach, or SetupLoopback for network mode none.
func bootMachine(t *testing.T, name string, root container.Root, network func(ctx context.Context, pid int) error) *bootedMachine {
	t.Helper()
	var uuid [16]byte
	_, _ = rand.Read(uuid[:])
	dir := t.TempDir()
	m := machinetest.Start(t, container.Config{
		Name:        name,
		UUID:        hex.EncodeToString(uuid[:]),
		Root:        root,
		Boot:        true,
		RuntimeDir:  filepath.Join(dir, "run"),
		ConsoleLog:  filepath.Join(dir, "console.log"),
		StopTimeout: 10 * time.Second,
	}, container.Hooks{Network: network})
	st := m.WaitState(t, "its init runs", func(st container.State) bool { return st.LeaderPID > 0 && st.Phase != container.PhaseStarting })
	return &bootedMachine{Machine: m, leader: st.LeaderPID}
}

// stop powers the machine off (or terminates it) and waits until it is gone.
func (m *bootedMachine) stop(t *testing.T, terminate bool) {
	t.Helper()
	if ended, _, _ := m.Ended(); ended {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c, err := container.Dial(m.Config.RuntimeDir); err == nil {
		if terminate {
			_ = c.Terminate(ctx)
		} else if err := c.Poweroff(ctx); err != nil {
			t.Errorf("machine %s: poweroff: %v", m.Config.Name, err)
		}
	}
	m.Wait(t)
}

// busyboxRoot is a copy of the busybox guest whose boot script also starts
// busybox's httpd on port 80.
func busyboxRoot(t *testing.T, name string) container.Root {
	root := testenv.CopyTree(t, testenv.BusyboxGuest(t))
	must(t, os.MkdirAll(filepath.Join(root, "www"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "www/index.html"), []byte("hello from "+name+"\n"), 0o644))
	f, err := os.OpenFile(filepath.Join(root, "etc/init.d/rcS"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteString("/bin/busybox httpd -p 80 -h /www\n")
	must(t, err)
	must(t, f.Close())
	return container.Root{Dir: root}
}

// debianRoot is an overlay over the cached Debian guest (never modified) whose
// upper layer adds a socket-activated service greeting on port 80: a TCP
// server made of systemd alone, as the minimal guest has no other.
func debianRoot(t *testing.T, name string) container.Root {
	lower := testenv.DebianGuest(t)
	dir := t.TempDir()
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	units := filepath.Join(upper, "etc/systemd/system")
	must(t, os.MkdirAll(filepath.Join(units, "sockets.target.wants"), 0o755))
	must(t, os.MkdirAll(work, 0o755))
	must(t, os.WriteFile(filepath.Join(units, "hello.socket"), []byte("[Socket]\nListenStream=80\nAccept=yes\n[Install]\nWantedBy=sockets.target\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(units, "hello@.service"), []byte("[Service]\nExecStart=/bin/echo hello from "+name+"\nStandardOutput=socket\n"), 0o644))
	must(t, os.Symlink("../hello.socket", filepath.Join(units, "sockets.target.wants/hello.socket")))
	return container.Root{Overlay: &container.Overlay{Lower: []string{lower}, Upper: upper, Work: work}}
}

// greeting connects from the namespace of pid until the machine's server
// answers (it may still be booting) and returns the first line.
func greeting(t *testing.T, pid int, addr, http string) string {
	t.Helper()
	var got string
	testenv.Eventually(t, 20*time.Second, func() error {
		var err error
		if got, err = askIn(pid, addr, http); err != nil || !strings.Contains(got, "hello from") {
			return fmt.Errorf("%s: no greeting from the machine: %q, %v", addr, got, err)
		}
		return nil
	})
	return got
}

func TestBootedMachines(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	ctx := context.Background()
	w := newNATWorldNoMachines(t)
	leases, err := OpenLeases(filepath.Join(t.TempDir(), "network"))
	must(t, err)
	netName := w.b.Network

	// IPAM gives each machine its addresses; the Network hook attaches it.
	attach := func(machine string) (Attachment, func(context.Context, int) error) {
		a := Attachment{Machine: machine, Bridge: w.b.Name, Gateway4: w.b.Gateway4.Addr(), Gateway6: w.b.Gateway6.Addr()}
		a.Addr4, err = leases.Allocate(netName, w.net.Subnet4, a.Gateway4, machine, netip.Addr{})
		must(t, err)
		a.Addr6, err = leases.Allocate(netName, w.net.Subnet6, a.Gateway6, machine, netip.Addr{})
		must(t, err)
		return a, func(ctx context.Context, pid int) error { return w.h.Attach(ctx, pid, a) }
	}
	bbName, debName, noneName := testenv.UniqueName("bb"), testenv.UniqueName("deb"), testenv.UniqueName("none")
	bbRoot, debRoot := busyboxRoot(t, bbName), debianRoot(t, debName)

	bbA, bbHook := attach(bbName)
	debA, debHook := attach(debName)
	if wrote, err := WriteResolvConf(bbRoot.Dir, ResolvConf{Machine: bbName, Servers: []netip.Addr{w.b.Gateway4.Addr()}}); err != nil || !wrote {
		t.Fatalf("resolv.conf: %v, %v", wrote, err)
	}
	bb := bootMachine(t, bbName, bbRoot, bbHook)
	deb := bootMachine(t, debName, debRoot, debHook)
	none := bootMachine(t, noneName, busyboxRoot(t, noneName), SetupLoopback)

	// The two machines reach each other and the gateway (guarded from here on).
	must(t, w.h.ApplyRules(ctx, Ruleset{Networks: []NATNetwork{w.net}, Guards: []Guard{bbA.Guard(), debA.Guard()}}))
	ping(t, bb.leader, debA.Addr4.Addr())
	ping(t, bb.leader, debA.Addr6.Addr())
	ping(t, deb.leader, bbA.Addr4.Addr())
	ping(t, deb.leader, w.b.Gateway4.Addr())
	ping(t, bb.leader, w.b.Gateway6.Addr())

	// Their servers, through port forwards on the host's address and on
	// localhost, IPv4 and IPv6 ([::1] by the loopback proxy).
	fwds := []Forward{
		{Machine: bbName, Proto: "tcp", HostPort: 8080, Addr: bbA.Addr4.Addr(), Port: 80},
		{Machine: bbName, Proto: "tcp", HostPort: 8080, Addr: bbA.Addr6.Addr(), Port: 80},
		{Machine: debName, Proto: "tcp", HostPort: 8081, Addr: debA.Addr4.Addr(), Port: 80},
		{Machine: debName, Proto: "tcp", HostPort: 8081, Addr: debA.Addr6.Addr(), Port: 80},
		// An IPv4-only forward answers on [::1] too (relayed over IPv4).
		{Machine: bbName, Proto: "tcp", HostPort: 8082, Addr: bbA.Addr4.Addr(), Port: 80},
	}
	// With their anti-spoofing guards, as berthd runs them.
	must(t, w.h.ApplyRules(ctx, Ruleset{Networks: []NATNetwork{w.net}, Forwards: fwds, Guards: []Guard{bbA.Guard(), debA.Guard()}}))
	proxy, err := w.h.ProxyLoopback(ctx, fwds)
	must(t, err)
	defer proxy.Close()
	const get = "GET / HTTP/1.0\r\n\r\n"
	for _, c := range []struct {
		from       netnsProc
		addr, http string
		want       string
	}{
		{w.host, w.hostAddr4 + ":8080", get, bbName},
		{w.host, "127.0.0.1:8080", get, bbName},
		{w.host, "[" + w.hostAddr6 + "]:8080", get, bbName},
		{w.host, "[::1]:8080", get, bbName},
		{w.outside, w.hostAddr4 + ":8080", get, bbName},
		{w.host, w.hostAddr4 + ":8081", "", debName},
		{w.host, "127.0.0.1:8081", "", debName},
		{w.host, "[::1]:8081", "", debName},
		{w.outside, "[" + w.hostAddr6 + "]:8081", "", debName},
		{w.host, "127.0.0.1:8082", get, bbName},
		{w.host, "[::1]:8082", get, bbName},
	} {
		if got := greeting(t, c.from.pid, c.addr, c.http); !strings.Contains(got, "hello from "+c.want) {
			t.Errorf("%s: got %q, want a greeting from %s", c.addr, got, c.want)
		}
	}

	// The guest got the resolv.conf berth wrote.
	if b, err := os.ReadFile(filepath.Join(bbRoot.Dir, "etc/resolv.conf")); err != nil || !strings.Contains(string(b), "nameserver "+w.b.Gateway4.Addr().String()) {
		t.Errorf("guest resolv.conf: %q, %v", b, err)
	}

	// Network mode none: loopback only, and up.
	out := mustSh(t, none.leader, "ip", "-o", "link")
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "lo:") || !strings.Contains(out, "UP") {
		t.Errorf("machine with network none has more than loopback, or loopback is down:\n%s", out)
	}

	// Restarting a machine gives it the same addresses.
	bb.stop(t, false)
	if out := mustSh(t, w.host.pid, "ip", "-o", "link"); strings.Contains(out, HostIfName(bbName)) {
		t.Errorf("veth of a stopped machine left behind:\n%s", out)
	}
	bbA2, bbHook2 := attach(bbName)
	if bbA2.Addr4 != bbA.Addr4 || bbA2.Addr6 != bbA.Addr6 {
		t.Errorf("after a restart %s got %s %s, before %s %s", bbName, bbA2.Addr4, bbA2.Addr6, bbA.Addr4, bbA.Addr6)
	}
	bb = bootMachine(t, bbName, bbRoot, bbHook2)
	if got := greeting(t, w.host.pid, "127.0.0.1:8080", get); !strings.Contains(got, bbName) {
		t.Errorf("after restart: %q", got)
	}

	// Removing a machine frees its lease.
	deb.stop(t, false)
	must(t, leases.Release(netName, debName))
	if ls, _ := leases.Leases(); len(ls) != 2 || ls[0].Machine != bbName {
		t.Errorf("leases after removing %s: %+v", debName, ls)
	}

	// Stop everything, remove the network: nothing is left.
	bb.stop(t, false)
	none.stop(t, false)
	proxy.Close()
	must(t, w.h.ApplyRules(ctx, Ruleset{}))
	must(t, w.h.DeleteBridge(ctx, w.b.Name))
	must(t, leases.ReleaseNetwork(netName))
	if out := mustSh(t, w.host.pid, "ip", "-o", "link"); strings.Contains(out, "vb-") || strings.Contains(out, w.b.Name) {
		t.Errorf("links left after removing the network:\n%s", out)
	}
	if out := mustSh(t, w.host.pid, "nft", "list", "tables"); strings.Contains(out, TableName) {
		t.Errorf("nftables tables left after removing the network:\n%s", out)
	}
	if ls, _ := leases.Leases(); len(ls) != 0 {
		t.Errorf("leases left after removing the network: %+v", ls)
	}
}
