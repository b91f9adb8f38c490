package netconf

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/testenv"
)

func testBridge(t *testing.T) Bridge {
	net := testenv.UniqueName("n")
	return Bridge{
		Name:     rundir.LinkName("br-", net), // as spec names a Network's default bridge
		Network:  net,
		Gateway4: mustPrefix("10.88.0.1/24"),
		Gateway6: mustPrefix("fd88::1/64"),
	}
}

func attachment(machine string, b Bridge, host4 string, host6 string) Attachment {
	a := Attachment{Machine: machine, Bridge: b.Name}
	if host4 != "" {
		a.Addr4 = mustPrefix(host4 + "/24")
		a.Gateway4 = b.Gateway4.Addr()
	}
	if host6 != "" {
		a.Addr6 = mustPrefix(host6 + "/64")
		a.Gateway6 = b.Gateway6.Addr()
	}
	return a
}

func TestEnsureBridge(t *testing.T) {
	ctx := context.Background()
	h, hp := testHost(t)
	b := testBridge(t)

	if err := h.EnsureBridge(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := h.EnsureBridge(ctx, b); err != nil {
		t.Fatalf("second EnsureBridge: %v", err)
	}
	if d, err := h.BridgeDrift(ctx, b); err != nil || d != nil {
		t.Fatalf("drift after EnsureBridge: %q, %v", d, err)
	}
	out := mustSh(t, hp.pid, "ip", "addr", "show", "dev", b.Name) + mustSh(t, hp.pid, "ip", "link", "show", "dev", b.Name)
	for _, want := range []string{"10.88.0.1/24", "fd88::1/64", "UP", "alias berth network " + b.Network} {
		if !strings.Contains(out, want) {
			t.Errorf("ip addr show: no %q in\n%s", want, out)
		}
	}

	// A wrong address is corrected, a missing one put back, the link brought
	// up (taking it down also dropped its IPv6 address).
	mustSh(t, hp.pid, "ip", "addr", "del", "10.88.0.1/24", "dev", b.Name)
	mustSh(t, hp.pid, "ip", "addr", "add", "10.88.0.7/24", "dev", b.Name)
	mustSh(t, hp.pid, "ip", "link", "set", b.Name, "down")
	d, err := h.BridgeDrift(ctx, b)
	if err != nil || len(d) != 4 {
		t.Fatalf("drift: want 4 differences (down, an extra and two missing addresses), got %q, %v", d, err)
	}
	if err := h.EnsureBridge(ctx, b); err != nil {
		t.Fatal(err)
	}
	if d, err := h.BridgeDrift(ctx, b); err != nil || d != nil {
		t.Fatalf("drift after repair: %q, %v", d, err)
	}

	// Someone else's bridge of that name is never changed.
	other := Bridge{Name: testenv.UniqueName("x"), Gateway4: mustPrefix("10.89.0.1/24")}
	mustSh(t, hp.pid, "ip", "link", "add", other.Name, "type", "bridge")
	if err := h.EnsureBridge(ctx, other); !errors.Is(err, ErrExists) {
		t.Fatalf("EnsureBridge on a foreign bridge: want ErrExists, got %v", err)
	}
	if err := h.DeleteBridge(ctx, other.Name); !errors.Is(err, ErrExists) {
		t.Fatalf("DeleteBridge on a foreign bridge: want ErrExists, got %v", err)
	}
	// ...but it can be used as it is by a network without a subnet.
	if err := h.EnsureBridge(ctx, Bridge{Name: other.Name}); err != nil {
		t.Fatalf("unmanaged bridge: %v", err)
	}

	// A subnet that overlaps the host's is refused before anything is made.
	clash := Bridge{Name: testenv.UniqueName("c"), Gateway4: mustPrefix("10.88.0.200/16")}
	if err := h.EnsureBridge(ctx, clash); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("overlapping subnet: want ErrExists naming the overlap, got %v", err)
	}
	if out, _ := sh(t, hp.pid, "ip", "link", "show", clash.Name); !strings.Contains(out, "does not exist") {
		t.Fatalf("refused bridge was left behind:\n%s", out)
	}

	if ok, err := h.BridgeExists(ctx, b.Name); !ok || err != nil {
		t.Fatalf("BridgeExists: %v, %v", ok, err)
	}
	if err := h.DeleteBridge(ctx, b.Name); err != nil {
		t.Fatal(err)
	}
	if err := h.DeleteBridge(ctx, b.Name); err != nil {
		t.Fatalf("second DeleteBridge: %v", err)
	}
	if ok, err := h.BridgeExists(ctx, b.Name); ok || err != nil {
		t.Fatalf("BridgeExists after delete: %v, %v", ok, err)
	}
}

func TestAttach(t *testing.T) {
	ctx := context.Background()
	h, hp := testHost(t)
	b := testBridge(t)
	if err := h.EnsureBridge(ctx, b); err != nil {
		t.Fatal(err)
	}
	m1, m2 := newNetns(t), newNetns(t)
	a1 := attachment(testenv.UniqueName("m1"), b, "10.88.0.2", "fd88::2")
	a2 := attachment(testenv.UniqueName("a-machine-with-a-long-name"), b, "10.88.0.3", "fd88::3")
	if err := h.Attach(ctx, m1.pid, a1); err != nil {
		t.Fatal(err)
	}
	if err := h.Attach(ctx, m2.pid, a2); err != nil {
		t.Fatal(err)
	}
	ping(t, m1.pid, mustAddr("10.88.0.3"))
	ping(t, m1.pid, mustAddr("fd88::3"))
	ping(t, m2.pid, b.Gateway4.Addr())
	ping(t, m2.pid, b.Gateway6.Addr())
	ping(t, hp.pid, mustAddr("10.88.0.2"))

	out := mustSh(t, m1.pid, "ip", "-o", "link", "show", GuestIfName)
	if !strings.Contains(out, MAC(a1.Machine).String()) {
		t.Errorf("host0 has not the machine's MAC %s:\n%s", MAC(a1.Machine), out)
	}
	out = mustSh(t, hp.pid, "ip", "-o", "link", "show", HostIfName(a2.Machine))
	if !strings.Contains(out, "master "+b.Name) || !strings.Contains(out, "altname vb-"+a2.Machine) {
		t.Errorf("long-named machine's link not on the bridge or without its full altname:\n%s", out)
	}

	// Attach again: nothing changes, nothing fails.
	if err := h.Attach(ctx, m1.pid, a1); err != nil {
		t.Fatalf("second Attach: %v", err)
	}
	if d, err := h.AttachmentDrift(ctx, m1.pid, a1); err != nil || d != nil {
		t.Fatalf("drift after Attach: %q, %v", d, err)
	}

	// Drift repair: the address lost inside, and the whole veth deleted.
	mustSh(t, m1.pid, "ip", "addr", "flush", "dev", GuestIfName)
	if d, _ := h.AttachmentDrift(ctx, m1.pid, a1); len(d) == 0 {
		t.Fatal("no drift reported after flushing host0's addresses")
	}
	if err := h.Attach(ctx, m1.pid, a1); err != nil {
		t.Fatal(err)
	}
	ping(t, m1.pid, mustAddr("10.88.0.3"))
	mustSh(t, hp.pid, "ip", "link", "del", HostIfName(a1.Machine))
	if d, _ := h.AttachmentDrift(ctx, m1.pid, a1); len(d) != 1 || !strings.Contains(d[0], "missing") {
		t.Fatalf("drift after deleting the veth: %q", d)
	}
	if err := h.Attach(ctx, m1.pid, a1); err != nil {
		t.Fatal(err)
	}
	ping(t, m1.pid, mustAddr("10.88.0.3"))
	ping(t, m1.pid, mustAddr("fd88::3"))

	// The same machine name from another namespace (an older instance still
	// running) is refused and leaves the running one alone.
	m3 := newNetns(t)
	if err := h.Attach(ctx, m3.pid, a1); !errors.Is(err, ErrExists) {
		t.Fatalf("attach of a second instance: want ErrExists, got %v", err)
	}
	ping(t, m1.pid, mustAddr("10.88.0.3"))

	if err := h.Detach(ctx, a1.Machine, ""); err != nil {
		t.Fatal(err)
	}
	if err := h.Detach(ctx, a1.Machine, ""); err != nil {
		t.Fatalf("second Detach: %v", err)
	}
	if out := mustSh(t, m1.pid, "ip", "-o", "link"); strings.Contains(out, GuestIfName) {
		t.Fatalf("host0 left in the machine after Detach:\n%s", out)
	}
	if err := h.DeleteBridge(ctx, b.Name); !errors.Is(err, ErrBusy) {
		t.Fatalf("DeleteBridge with a machine on it: want ErrBusy, got %v", err)
	}
}

func TestAttachClash(t *testing.T) {
	ctx := context.Background()
	h, hp := testHost(t)
	b := testBridge(t)
	if err := h.EnsureBridge(ctx, b); err != nil {
		t.Fatal(err)
	}
	m := newNetns(t)
	// The bridge's own address, and an address on another host interface.
	mustSh(t, hp.pid, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	mustSh(t, hp.pid, "ip", "addr", "add", "10.88.0.9/32", "dev", "up0")
	for _, addr := range []string{"10.88.0.1", "10.88.0.9"} {
		a := attachment(testenv.UniqueName("clash"), b, addr, "")
		a.Gateway4 = mustAddr("10.88.0.1")
		if addr == "10.88.0.1" {
			a.Gateway4 = mustAddr("10.88.0.9")
		}
		err := h.Attach(ctx, m.pid, a)
		if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "already in use on the host") || !strings.Contains(err.Error(), a.Machine) {
			t.Fatalf("attach with host address %s: want a clear ErrExists naming the machine, got %v", addr, err)
		}
		if out := mustSh(t, hp.pid, "ip", "-o", "link"); strings.Contains(out, HostIfName(a.Machine)) {
			t.Fatalf("half-made link left on the host:\n%s", out)
		}
		if out := mustSh(t, m.pid, "ip", "-o", "link"); strings.Contains(out, GuestIfName) {
			t.Fatalf("half-made link left in the machine:\n%s", out)
		}
	}
	// A failure after the veth exists is rolled back too: with IPv6 off in
	// the machine's namespace the kernel refuses host0's IPv6 address.
	mustSh(t, m.pid, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
	a := attachment(testenv.UniqueName("late"), b, "10.88.0.5", "fd88::5")
	if err := h.Attach(ctx, m.pid, a); err == nil || !strings.Contains(err.Error(), "fd88::5") {
		t.Fatalf("attach into a namespace without IPv6: want an error naming the address, got %v", err)
	}
	if out := mustSh(t, hp.pid, "ip", "-o", "link"); strings.Contains(out, HostIfName(a.Machine)) {
		t.Fatalf("veth left on the host after a failed attach:\n%s", out)
	}
	if out := mustSh(t, m.pid, "ip", "-o", "link"); strings.Contains(out, GuestIfName) {
		t.Fatalf("host0 left in the machine after a failed attach:\n%s", out)
	}
}

// A restarted machine attaches while the kernel may still be freeing its
// previous run's namespace, and with it the previous veth: the new run waits
// for it to go, then makes its own and reaches the bridge.
func TestAttachAfterPreviousRun(t *testing.T) {
	ctx := context.Background()
	h, _ := testHost(t)
	b := testBridge(t)
	if err := h.EnsureBridge(ctx, b); err != nil {
		t.Fatal(err)
	}
	old, cur := newNetns(t), newNetns(t)
	a := attachment(testenv.UniqueName("again"), b, "10.88.0.7", "")
	if err := h.Attach(ctx, old.pid, a); err != nil {
		t.Fatal(err)
	}
	// The previous run ends: its namespace is freed in the background.
	if err := syscall.Kill(old.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := h.Attach(ctx, cur.pid, a); err != nil {
		t.Fatalf("attach of the next run while the previous one's namespace goes: %v", err)
	}
	ping(t, cur.pid, b.Gateway4.Addr())
}

// Machines starting together attach at the same time (berthd starts many at
// once at boot): every one gets its link, none disturbs another.
func TestAttachConcurrent(t *testing.T) {
	ctx := context.Background()
	h, _ := testHost(t)
	b := testBridge(t)
	if err := h.EnsureBridge(ctx, b); err != nil {
		t.Fatal(err)
	}
	const n = 12
	ms := make([]netnsProc, n)
	as := make([]Attachment, n)
	for i := range ms {
		ms[i] = newNetns(t)
		as[i] = attachment(testenv.UniqueName(fmt.Sprintf("c%d", i)), b, fmt.Sprintf("10.88.0.%d", 10+i), fmt.Sprintf("fd88::%d", 10+i))
	}
	errs := make(chan error, n)
	for i := range ms {
		go func() { errs <- h.Attach(ctx, ms[i].pid, as[i]) }()
	}
	for range ms {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}
	ping(t, ms[0].pid, as[n-1].Addr4.Addr())
	ping(t, ms[n-1].pid, as[0].Addr6.Addr())
	for i := range ms {
		if d, err := h.AttachmentDrift(ctx, ms[i].pid, as[i]); err != nil || d != nil {
			t.Errorf("machine %d: drift %q, %v", i, d, err)
		}
	}
}
