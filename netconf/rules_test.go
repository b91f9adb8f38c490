package netconf

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var lan = NATNetwork{Name: "lan", Bridge: "br-lan", Subnet4: mustPrefix("10.88.0.0/24"), Subnet6: mustPrefix("fd88::/64"), Masquerade: true}
var iso = NATNetwork{Name: "isolated", Bridge: "br-isolated", Subnet4: mustPrefix("10.89.0.0/24")}

var goldenRulesets = map[string]Ruleset{
	// A network without NAT or forwards still gets its bridge guarded.
	"isolated": {Networks: []NATNetwork{iso}},
	"nat":      {Networks: []NATNetwork{lan, iso}},
	"forwards": {
		Networks: []NATNetwork{lan, iso},
		Forwards: []Forward{
			{Machine: "web", Proto: "tcp", HostPort: 8080, Addr: mustAddr("10.88.0.2"), Port: 80},
			{Machine: "web", Proto: "tcp", HostPort: 8080, Addr: mustAddr("fd88::2"), Port: 80},
			{Machine: "dns", Proto: "udp", HostAddr: mustAddr("192.0.2.10"), HostPort: 53, Addr: mustAddr("10.89.0.5"), Port: 53},
			{Machine: "db", Proto: "tcp", HostAddr: mustAddr("127.0.0.1"), HostPort: 5432, Addr: mustAddr("10.88.0.3"), Port: 5432},
			// [::1] is LoopbackProxy's: no kernel rule.
			{Machine: "db", Proto: "tcp", HostAddr: mustAddr("::1"), HostPort: 5432, Addr: mustAddr("fd88::3"), Port: 5432},
		},
	},
}

func TestPlanGolden(t *testing.T) {
	for name, rs := range goldenRulesets {
		t.Run(name, func(t *testing.T) {
			if err := rs.Validate(); err != nil {
				t.Fatal(err)
			}
			got := render(plan(rs))
			path := filepath.Join("testdata", "rules", name+".nft")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("plan differs from %s (run with -update if the change is intended):\n%s", path, got)
			}
			// The plan does not depend on the order of the input.
			rev := Ruleset{Networks: reversed(rs.Networks), Forwards: reversed(rs.Forwards)}
			if again := render(plan(rev)); again != got {
				t.Errorf("plan depends on input order:\n%s", again)
			}
		})
	}
}

func reversed[T any](s []T) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

func TestRulesetValidate(t *testing.T) {
	fw := func(f Forward) Ruleset { return Ruleset{Networks: []NATNetwork{lan}, Forwards: []Forward{f}} }
	web := Forward{Machine: "web", Proto: "tcp", HostPort: 8080, Addr: mustAddr("10.88.0.2"), Port: 80}
	mod := func(f func(*Forward)) Forward { w := web; f(&w); return w }
	tests := []struct {
		name string
		rs   Ruleset
		err  error
		msg  string
	}{
		{"ok", fw(web), nil, ""},
		{"proto", fw(mod(func(f *Forward) { f.Proto = "sctp" })), ErrInvalid, "want tcp or udp"},
		{"port", fw(mod(func(f *Forward) { f.Port = 0 })), ErrInvalid, "ports"},
		{"families", fw(mod(func(f *Forward) { f.HostAddr = mustAddr("::1") })), ErrInvalid, "different IP versions"},
		{"off-network", fw(mod(func(f *Forward) { f.Addr = mustAddr("10.99.0.2") })), ErrInvalid, "none of the networks"},
		{"same port", Ruleset{Networks: []NATNetwork{lan}, Forwards: []Forward{web, mod(func(f *Forward) { f.Machine = "other"; f.Addr = mustAddr("10.88.0.3") })}}, ErrExists, `forwarded to machine "web"`},
		{"wildcard and specific", Ruleset{Networks: []NATNetwork{lan}, Forwards: []Forward{web, mod(func(f *Forward) { f.HostAddr = mustAddr("127.0.0.1") })}}, ErrExists, "already forwarded"},
		{"v4 and v6 on one port", Ruleset{Networks: []NATNetwork{lan}, Forwards: []Forward{web, mod(func(f *Forward) { f.Addr = mustAddr("fd88::2") })}}, nil, ""},
		{"tcp and udp on one port", Ruleset{Networks: []NATNetwork{lan}, Forwards: []Forward{web, mod(func(f *Forward) { f.Proto = "udp" })}}, nil, ""},
		{"subnet with host bits", Ruleset{Networks: []NATNetwork{{Name: "x", Bridge: "br-x", Subnet4: mustPrefix("10.0.0.1/24")}}}, ErrInvalid, "10.0.0.0/24"},
		{"shared bridge", Ruleset{Networks: []NATNetwork{lan, {Name: "b", Bridge: "br-lan"}}}, ErrInvalid, "own bridge"},
	}
	for _, tt := range tests {
		err := tt.rs.Validate()
		if tt.err == nil {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: want %v mentioning %q, got %v", tt.name, tt.err, tt.msg, err)
		}
	}
}

func TestCommentsRoundTrip(t *testing.T) {
	rs := goldenRulesets["forwards"]
	for _, n := range rs.Networks {
		got, ok := parseNetworkComment(networkComment(n))
		if !ok || !reflect.DeepEqual(got, n) {
			t.Errorf("network %s: read back %+v", n.Name, got)
		}
	}
	for _, f := range rs.Forwards {
		got, ok := parseForwardComment("forward " + f.String())
		if !ok || got != f {
			t.Errorf("forward %s: read back %+v", f, got)
		}
	}
}
