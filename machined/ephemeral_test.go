package machined_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/userns"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/netconf"
)

// TestEphemeralMachines: an ephemeral busybox machine under berthd loses
// what it wrote when it stops and starts again, keeps its address (the lease
// stays while it is declared), leaves no root, mount, scratch layer or UID
// range behind when it stops, and never changes its image; then a template
// with copies: 3 runs three ephemeral machines with addresses of their own,
// and copies: 2 stops the third.
func TestEphemeralMachines(t *testing.T) {
	e := newEnv(t, "")
	name := testenv.UniqueName("eph")
	e.write("images.yaml", testImages(t))
	e.write("network.yaml", testNetwork)
	e.write("eph.yaml", bbMachine(name, "root: {ephemeral: true, ephemeralSize: 32M}\n"))
	var addr []string
	var imageSum string

	e.run("running, its writes on the scratch layer", func(t *testing.T) {
		e.apply()
		s := e.waitState(name, api.StateRunning, 30*time.Second)
		addr = s.Addresses
		if len(addr) == 0 || s.RootStrategy != "ephemeral" || s.Root != "" || s.Users == nil {
			t.Fatalf("status: addresses %v, root %q %q, users %+v: want an address, an ephemeral root, a UID range", addr, s.RootStrategy, s.Root, s.Users)
		}
		imageSum = testenv.TreeSum(t, filepath.Join(e.paths.StateDir, "images"))
		if out, code := e.exec(name, "sh", "-c", "echo gone > /etc/mark && cat /etc/mark && df -k / | tail -1"); code != 0 || !strings.HasPrefix(out, "gone\n") || !strings.Contains(out, " 32768 ") {
			t.Fatalf("write in the machine (exit %d): %q, want the file on a 32M layer", code, out)
		}
		// berth's files reach the fresh layer at every boot.
		if out, _ := e.exec(name, "cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver 10.98.0.1") {
			t.Errorf("the ephemeral machine's resolv.conf: %q, want the network's resolver", out)
		}
		if _, err := os.Stat(filepath.Join(e.paths.StateDir, "machines", name)); !os.IsNotExist(err) {
			t.Errorf("an ephemeral machine has a directory in the state directory: %v", err)
		}
	})

	e.run("stopped: nothing left", func(t *testing.T) {
		if err := e.api.Verb(t.Context(), name, "stop"); err != nil {
			t.Fatal(err)
		}
		e.waitState(name, api.StateStopped, 30*time.Second)
		run := rundir.For(e.paths.RuntimeDir, name)
		testenv.Eventually(t, 10*time.Second, func() error {
			if r, ok, err := userns.Open(e.paths.StateDir).Get(name); err != nil || ok {
				return fmt.Errorf("the UID range is still recorded: %+v %v", r, err)
			}
			return nil
		})
		if _, err := os.Stat(run.Seed()); !os.IsNotExist(err) {
			t.Errorf("seed left after the stop: %v", err)
		}
		if ents, _ := os.ReadDir(run.Scratch()); len(ents) != 0 {
			t.Errorf("the scratch mount point holds %v after the stop", ents)
		}
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		if strings.Contains(string(mounts), e.paths.RuntimeDir) || strings.Contains(string(mounts), e.paths.StateDir) {
			t.Errorf("mounts left under the runtime or state directory:\n%s", mounts)
		}
		if ents, _ := os.ReadDir(filepath.Join(e.paths.StateDir, "machines")); slices.ContainsFunc(ents, func(d os.DirEntry) bool { return d.Name() == name }) {
			t.Errorf("a root was made for an ephemeral machine")
		}
		if got := testenv.TreeSum(t, filepath.Join(e.paths.StateDir, "images")); got != imageSum {
			t.Errorf("the image changed under an ephemeral machine:\nbefore %s\nafter  %s", imageSum, got)
		}
	})

	e.run("started again: fresh, same address", func(t *testing.T) {
		if err := e.api.Verb(t.Context(), name, "start"); err != nil {
			t.Fatal(err)
		}
		s := e.waitState(name, api.StateRunning, 30*time.Second)
		if !slices.Equal(s.Addresses, addr) {
			t.Errorf("addresses %v after a restart, want %v (the lease is kept while declared)", s.Addresses, addr)
		}
		if out, code := e.exec(name, "sh", "-c", "cat /etc/mark"); code == 0 {
			t.Errorf("the file written before the stop is back: %q", out)
		}
		if out, _ := e.exec(name, "cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver 10.98.0.1") {
			t.Errorf("resolv.conf after a restart: %q", out)
		}
	})

	lab := testenv.UniqueName("lab")
	copies := func(n int) {
		e.write("lab.yaml", bbMachine(lab, fmt.Sprintf("copies: %d\nroot: {ephemeral: true}\n", n)))
	}
	e.run("copies: 3", func(t *testing.T) {
		copies(3)
		e.apply()
		seen := map[string]string{}
		for i := 1; i <= 3; i++ {
			c := fmt.Sprintf("%s-%d", lab, i)
			s := e.waitState(c, api.StateRunning, 60*time.Second)
			if len(s.Addresses) == 0 {
				t.Fatalf("%s has no address", c)
			}
			if o, dup := seen[s.Addresses[0]]; dup {
				t.Errorf("%s and %s both have %s", c, o, s.Addresses[0])
			}
			seen[s.Addresses[0]] = c
			if out, _ := e.exec(c, "hostname"); strings.TrimSpace(out) != c {
				t.Errorf("%s: hostname %q", c, out)
			}
		}
		if _, err := e.api.Status(t.Context(), lab); err == nil {
			t.Errorf("the template %s is a machine of its own", lab)
		}
	})

	e.run("copies: 2", func(t *testing.T) {
		copies(2)
		e.apply()
		third := lab + "-3"
		testenv.Eventually(t, 30*time.Second, func() error {
			list, err := e.api.List(context.Background())
			if err != nil {
				return err
			}
			for _, m := range list {
				if m.Name == third {
					return fmt.Errorf("%s is still listed: %s", third, m.State)
				}
			}
			return nil
		})
		e.waitState(lab+"-2", api.StateRunning, 10*time.Second)
		// Nothing of an ephemeral copy is data: its lease and range go.
		testenv.Eventually(t, 10*time.Second, func() error {
			ls, err := netconf.OpenLeases(filepath.Join(e.paths.StateDir, "network"))
			if err != nil {
				return err
			}
			leases, err := ls.Leases()
			if err != nil {
				return err
			}
			for _, l := range leases {
				if l.Machine == third {
					return fmt.Errorf("%s keeps its lease %+v", third, l)
				}
			}
			if _, ok, _ := userns.Open(e.paths.StateDir).Get(third); ok {
				return fmt.Errorf("%s keeps its UID range", third)
			}
			return nil
		})
	})
}
