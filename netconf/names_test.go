package netconf

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestIfNames(t *testing.T) {
	tests := []struct {
		fn   func(string) string
		in   string
		want string // exact, or a prefix when hashed is set
		hash bool
	}{
		{HostIfName, "web", "vb-web", false},
		{HostIfName, "twelve-chars", "vb-twelve-chars", false}, // exactly 15
		{HostIfName, "thirteen-char", "vb-thirt", true},        // 16 → hashed
		{HostIfName, "a/b", "vb-a-b", true},                    // '/' is not allowed
		{HostIfName, "with space", "vb-with-", true},           // neither is white space
		{HostIfName, "db:1", "vb-db-1", true},                  // ':' reads as an alias label
	}
	for _, tt := range tests {
		got := tt.fn(tt.in)
		if len(got) > maxIfName {
			t.Errorf("%q → %q: longer than %d", tt.in, got, maxIfName)
		}
		if !tt.hash {
			if got != tt.want {
				t.Errorf("%q → %q, want %q", tt.in, got, tt.want)
			}
			continue
		}
		if !strings.HasPrefix(got, tt.want) || len(got) != len(tt.want)+hashLen {
			t.Errorf("%q → %q, want %q and %d hash characters", tt.in, got, tt.want, hashLen)
		}
		if !validIfChars(got) {
			t.Errorf("%q → %q: not a valid interface name", tt.in, got)
		}
		if again := tt.fn(tt.in); again != got {
			t.Errorf("%q: not stable: %q then %q", tt.in, got, again)
		}
	}
}

// Long machine names that share their first characters must not share a link.
func TestHostIfNameNoCollisions(t *testing.T) {
	seen := map[string]string{}
	for i := 0; i < 20000; i++ {
		m := fmt.Sprintf("machine-with-a-long-name-%d", i)
		n := HostIfName(m)
		if other, dup := seen[n]; dup {
			t.Fatalf("%q and %q both map to %q", other, m, n)
		}
		seen[n] = m
	}
}

func TestMAC(t *testing.T) {
	a, b := MAC("web"), MAC("db")
	if a.String() == b.String() {
		t.Fatalf("two machines share MAC %s", a)
	}
	if MAC("web").String() != a.String() {
		t.Fatal("MAC is not stable")
	}
	for _, m := range [][]byte{a, b, hostMAC("web"), bridgeMAC("br-lan")} {
		if len(m) != 6 || m[0]&1 != 0 || m[0]&2 == 0 {
			t.Errorf("%x: want a locally administered unicast MAC", m)
		}
	}
	if hostMAC("web").String() == a.String() {
		t.Error("host and guest side of a veth share a MAC")
	}
}

// Any machine or network name gives a valid interface name, the same every time.
func FuzzIfName(f *testing.F) {
	for _, s := range []string{"web", "a-machine-with-a-long-name", "a/b", "", ".", "..", "ü", "x\x00y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		for _, fn := range []func(string) string{HostIfName} {
			got := fn(name)
			if len(got) > maxIfName || !validIfChars(got) {
				t.Fatalf("%q → %q: not a valid interface name", name, got)
			}
			if fn(name) != got {
				t.Fatalf("%q: not stable", name)
			}
		}
	})
}

// Whatever a rule comment says, reading it back never panics, and what
// parses renders to the same comment again.
func FuzzParseForwardComment(f *testing.F) {
	f.Add("forward web tcp *:8080 -> 10.88.0.2:80")
	f.Add("forward db udp [::1]:53 -> [fd88::2]:53")
	f.Fuzz(func(t *testing.T, c string) {
		fw, ok := parseForwardComment(c)
		if !ok {
			return
		}
		if again, ok := parseForwardComment("forward " + fw.String()); !ok || again != fw {
			t.Fatalf("%q → %+v → %q → %+v", c, fw, fw.String(), again)
		}
	})
}

// The same for the comment a guard's jump rule carries.
func FuzzParseGuardComment(f *testing.F) {
	f.Add("machine web port vb-web mac 02:42:0a:58:00:02 ipv4 10.88.0.2 ipv6 fd88::2")
	f.Add("machine dns port vb-dns mac 02:42:0a:58:00:05 ipv4 10.89.0.5")
	f.Fuzz(func(t *testing.T, c string) {
		g, ok := parseGuardComment(c)
		if !ok {
			return
		}
		if again, ok := parseGuardComment(g.String()); !ok || !reflect.DeepEqual(again, g) {
			t.Fatalf("%q → %+v → %q → %+v", c, g, g.String(), again)
		}
	})
}
