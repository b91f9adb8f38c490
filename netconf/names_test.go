package netconf

import (
	"reflect"
	"testing"
)

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
