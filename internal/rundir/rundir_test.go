package rundir

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/errdefs"
)

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{"web": "web", "my root": "my-root", ".hidden": "hidden", "": "machine",
		"a/b": "a-b", "Web_Server": "web-server", "x..y": "x-y", strings.Repeat("a", 70): strings.Repeat("a", 63)} {
		got := SanitizeName(in)
		if got != want {
			t.Errorf("SanitizeName(%q) = %q, want %q", in, got, want)
		}
		if err := CheckName(got); err != nil {
			t.Errorf("SanitizeName(%q) = %q, which is not a valid name: %v", in, got, err)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"web", "a", "web-1", "0", strings.Repeat("a", 63)} {
		if err := CheckName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Web", "web_1", "-web", "web-", "../x", "a.b", strings.Repeat("a", 64)} {
		err := CheckName(bad)
		if err == nil || !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%q: %v, want an invalid-name error", bad, err)
		}
	}
	if err := CheckName("Web"); !strings.Contains(err.Error(), `did you mean "web"`) {
		t.Errorf("no suggestion: %v", err)
	}
}

// TestMachineUUID: one ID per name, stable (berth boot and berthd agree on
// it; a change here changes every machine's ID), and shaped like systemd's.
func TestMachineUUID(t *testing.T) {
	if got := MachineUUID("web"); got != MachineUUID("web") || got == MachineUUID("web2") || len(got) != 32 || got[12] != '4' {
		t.Errorf("MachineUUID(web) = %s", got)
	}
}

func TestLinkName(t *testing.T) {
	for _, tc := range []struct{ prefix, name, want string }{
		{"vb-", "web", "vb-web"},
		{"br-", "demo", "br-demo"},
		{"vb-", "averyveryverylongname", ""},
	} {
		got := LinkName(tc.prefix, tc.name)
		if tc.want != "" && got != tc.want {
			t.Errorf("LinkName(%q, %q) = %q, want %q", tc.prefix, tc.name, got, tc.want)
		}
		if len(got) > 15 || !strings.HasPrefix(got, tc.prefix) {
			t.Errorf("LinkName(%q, %q) = %q: too long or lost its prefix", tc.prefix, tc.name, got)
		}
	}
	if LinkName("vb-", "averyveryverylongname-a") == LinkName("vb-", "averyveryverylongname-b") {
		t.Error("two long names share a link name")
	}
}

// vbName is a machine's host-side link name, as netconf makes it.
func vbName(machine string) string { return LinkName("vb-", machine) }

func TestIfNames(t *testing.T) {
	tests := []struct {
		fn   func(string) string
		in   string
		want string // exact, or a prefix when hashed is set
		hash bool
	}{
		{vbName, "web", "vb-web", false},
		{vbName, "twelve-chars", "vb-twelve-chars", false}, // exactly 15
		{vbName, "thirteen-char", "vb-thirt", true},        // 16 → hashed
		{vbName, "a/b", "vb-a-b", true},                    // '/' is not allowed
		{vbName, "with space", "vb-with-", true},           // neither is white space
		{vbName, "db:1", "vb-db-1", true},                  // ':' reads as an alias label
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
func TestVethNameNoCollisions(t *testing.T) {
	seen := map[string]string{}
	for i := 0; i < 20000; i++ {
		m := fmt.Sprintf("machine-with-a-long-name-%d", i)
		n := vbName(m)
		if other, dup := seen[n]; dup {
			t.Fatalf("%q and %q both map to %q", other, m, n)
		}
		seen[n] = m
	}
}

// Any machine or network name gives a valid interface name, the same every time.
func FuzzIfName(f *testing.F) {
	for _, s := range []string{"web", "a-machine-with-a-long-name", "a/b", "", ".", "..", "ü", "x\x00y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		for _, fn := range []func(string) string{vbName} {
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
