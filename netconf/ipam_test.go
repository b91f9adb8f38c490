package netconf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestAllocate(t *testing.T) {
	l, err := OpenLeases(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sub := mustPrefix("10.0.0.0/29") // .1 gateway, .2–.6 machines, .7 broadcast
	gw := mustAddr("10.0.0.1")
	none := netip.Addr{}
	alloc := func(machine string, static netip.Addr, reserved ...netip.Addr) (netip.Prefix, error) {
		return l.Allocate("lan", sub, gw, machine, static, reserved...)
	}
	steps := []struct {
		machine  string
		static   string
		reserved []string
		want     string // address, or an error class below
		err      error
	}{
		{machine: "a", want: "10.0.0.2/29"},
		{machine: "b", want: "10.0.0.3/29"},
		{machine: "a", want: "10.0.0.2/29"},                                 // the same address again
		{machine: "c", reserved: []string{"10.0.0.4"}, want: "10.0.0.5/29"}, // another machine's static is skipped
		{machine: "d", static: "10.0.0.4", want: "10.0.0.4/29"},             // ...and claimed by it
		{machine: "e", static: "10.0.0.3", err: ErrExists},                  // b holds it
		{machine: "e", static: "10.0.0.1", err: ErrInvalid},                 // the gateway
		{machine: "e", static: "10.0.0.7", err: ErrInvalid},                 // broadcast
		{machine: "e", static: "10.0.1.2", err: ErrInvalid},                 // outside
		{machine: "e", want: "10.0.0.6/29"},
		{machine: "f", err: ErrExhausted},
		{machine: "b", static: "10.0.0.3", want: "10.0.0.3/29"},           // b's own address made static
		{machine: "a", reserved: []string{"10.0.0.2"}, err: ErrExhausted}, // a's lease is now someone's static: a must move, and nothing is free
	}
	for i, s := range steps {
		static := none
		if s.static != "" {
			static = mustAddr(s.static)
		}
		var reserved []netip.Addr
		for _, r := range s.reserved {
			reserved = append(reserved, mustAddr(r))
		}
		got, err := alloc(s.machine, static, reserved...)
		if s.err != nil {
			if !errors.Is(err, s.err) {
				t.Fatalf("step %d (%s): want %v, got %v, %v", i, s.machine, s.err, got, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", s.machine)) {
				t.Errorf("step %d: error does not name the machine: %v", i, err)
			}
			continue
		}
		if err != nil || got.String() != s.want {
			t.Fatalf("step %d (%s): want %s, got %v, %v", i, s.machine, s.want, got, err)
		}
	}

	// IPv6 leases are separate; the subnet-router anycast address (::) is never
	// handed out.
	p6, err := l.Allocate("lan", mustPrefix("fd00::/64"), mustAddr("fd00::1"), "a", none)
	if err != nil || p6.String() != "fd00::2/64" {
		t.Fatalf("IPv6: got %v, %v", p6, err)
	}

	// Survives a reopen (a daemon or host restart).
	l2, _ := OpenLeases(l.dir)
	if got, _ := l2.Allocate("lan", sub, gw, "e", none); got.String() != "10.0.0.6/29" {
		t.Fatalf("after reopen: e got %v", got)
	}
	if err := l2.Release("lan", "a"); err != nil {
		t.Fatal(err)
	}
	if got, err := l2.Allocate("lan", sub, gw, "f", none); err != nil || got.String() != "10.0.0.2/29" {
		t.Fatalf("after releasing a: f got %v, %v", got, err)
	}
	if err := l2.ReleaseNetwork("lan"); err != nil {
		t.Fatal(err)
	}
	if ls, err := l2.Leases(); err != nil || len(ls) != 0 {
		t.Fatalf("after ReleaseNetwork: %v, %v", ls, err)
	}
}

func TestAllocateInvalid(t *testing.T) {
	l, _ := OpenLeases(t.TempDir())
	for _, sub := range []string{"10.0.0.0/31", "fd00::/127"} {
		if _, err := l.Allocate("n", mustPrefix(sub), netip.Addr{}, "m", netip.Addr{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("subnet %s: want ErrInvalid, got %v", sub, err)
		}
	}
	if _, err := l.Allocate("n", mustPrefix("10.0.0.0/24"), mustAddr("10.0.1.1"), "m", netip.Addr{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("gateway outside the subnet: want ErrInvalid, got %v", err)
	}
	// A subnet given with host bits is taken as its network.
	if p, err := l.Allocate("n", mustPrefix("10.0.0.9/24"), mustAddr("10.0.0.1"), "m", netip.Addr{}); err != nil || p.String() != "10.0.0.2/24" {
		t.Errorf("subnet with host bits: %v, %v", p, err)
	}
}

func TestLeasesCorruptFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, leasesFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, _ := OpenLeases(dir)
	if p, err := l.Allocate("n", mustPrefix("10.0.0.0/24"), mustAddr("10.0.0.1"), "m", netip.Addr{}); err != nil || p.String() != "10.0.0.2/24" {
		t.Fatalf("allocate over a corrupt file: %v, %v", p, err)
	}
	aside, _ := filepath.Glob(filepath.Join(dir, leasesFile+".corrupt-*"))
	if len(aside) != 1 {
		t.Fatalf("corrupt file not kept aside: %v", aside)
	}
}

// Many goroutines and several processes allocate at once: every machine gets
// one address and no address is given twice.
func TestLeasesConcurrent(t *testing.T) {
	dir := t.TempDir()
	const procs, perProc, goroutines = 4, 25, 25
	var cmds []*exec.Cmd
	for p := 0; p < procs; p++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLeaseWorker$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("BERTH_LEASE_WORKER=%s|proc%d|%d", dir, p, perProc))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	l, _ := OpenLeases(dir)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := l.Allocate("lan", mustPrefix("10.1.0.0/24"), mustAddr("10.1.0.1"), fmt.Sprintf("goroutine%d", g), netip.Addr{}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("worker process: %v", err)
		}
	}
	leases, err := l.Leases()
	if err != nil {
		t.Fatal(err)
	}
	if want := procs*perProc + goroutines; len(leases) != want {
		t.Fatalf("%d leases, want %d", len(leases), want)
	}
	seen := map[netip.Addr]string{}
	for _, ls := range leases {
		if other, dup := seen[ls.Addr.Addr()]; dup {
			t.Fatalf("address %s given to %s and %s", ls.Addr, other, ls.Machine)
		}
		seen[ls.Addr.Addr()] = ls.Machine
	}
}

// TestLeaseWorker is the body of TestLeasesConcurrent's worker processes.
func TestLeaseWorker(t *testing.T) {
	spec := os.Getenv("BERTH_LEASE_WORKER")
	if spec == "" {
		t.Skip("only run as a worker process of TestLeasesConcurrent")
	}
	var dir, prefix string
	var n int
	parts := strings.Split(spec, "|")
	dir, prefix = parts[0], parts[1]
	fmt.Sscan(parts[2], &n)
	l, _ := OpenLeases(dir)
	for i := 0; i < n; i++ {
		if _, err := l.Allocate("lan", mustPrefix("10.1.0.0/24"), mustAddr("10.1.0.1"), fmt.Sprintf("%s-%d", prefix, i), netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	}
}

// AllocateAll gives a machine all its addresses or none.
func TestAllocateAll(t *testing.T) {
	l, _ := OpenLeases(t.TempDir())
	reqs := []AddrRequest{
		{Subnet: mustPrefix("10.0.0.0/24"), Gateway: mustAddr("10.0.0.1")},
		{Subnet: mustPrefix("fd00::/64"), Gateway: mustAddr("fd00::1")},
	}
	got, err := l.AllocateAll("lan", "a", reqs)
	if err != nil || len(got) != 2 || got[0].String() != "10.0.0.2/24" || got[1].String() != "fd00::2/64" {
		t.Fatalf("got %v, %v", got, err)
	}
	// b's IPv6 static is a's: b gets no IPv4 lease either.
	reqs[1].Static = mustAddr("fd00::2")
	if _, err := l.AllocateAll("lan", "b", reqs); !errors.Is(err, ErrExists) {
		t.Fatalf("want ErrExists, got %v", err)
	}
	if ls, _ := l.Leases(); len(ls) != 2 {
		t.Fatalf("a failed AllocateAll left leases: %+v", ls)
	}
	if _, err := l.AllocateAll("lan", "b", []AddrRequest{reqs[0], reqs[0]}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("two IPv4 requests: want ErrInvalid, got %v", err)
	}
}
