package syscalls

import (
	"strings"
	"testing"
)

// TestNamesKnown: every name in the groups, the extra list and the
// capability table is a system call of some architecture berth filters (a
// typo would silently allow or refuse nothing).
func TestNamesKnown(t *testing.T) {
	check := func(where, name string) {
		if !Known(name) {
			t.Errorf("%s: %q is not a system call of %v", where, name, tableNames())
		}
	}
	for _, g := range Groups {
		if !strings.HasPrefix(g.Name, "@") || g.Why == "" {
			t.Errorf("group %q: a name with @ and a reason are required", g.Name)
		}
		for _, n := range g.Members {
			check(g.Name, n)
		}
	}
	for _, n := range Extra {
		check("@extra", n)
	}
	for _, e := range append(append([]string{}, Default...), flatten()...) {
		if err := CheckEntry(e); err != nil {
			t.Error(err)
		}
	}
	for _, n := range Never {
		if err := CheckEntry(n.Name); err != nil || n.Why == "" {
			t.Errorf("Never %q: %v (a reason is required)", n.Name, err)
		}
	}
}

func flatten() []string {
	var out []string
	for _, c := range ByCapability {
		out = append(out, c.Entries...)
	}
	return out
}

func tableNames() []string {
	var out []string
	for _, t := range Tables {
		out = append(out, t.Name)
	}
	return out
}

func TestResolveOrder(t *testing.T) {
	for _, tc := range []struct {
		filter []string
		name   string
		want   bool
	}{
		{nil, "read", true},
		{nil, "keyctl", false},
		{[]string{"~read"}, "read", false},
		{[]string{"~@basic-io", "read"}, "read", true},
		{[]string{"read", "~@basic-io"}, "read", false},
	} {
		got, err := Resolve(nil, tc.filter)
		if err != nil {
			t.Fatal(err)
		}
		if got[tc.name] != tc.want {
			t.Errorf("Resolve(%v)[%s] = %v, want %v", tc.filter, tc.name, got[tc.name], tc.want)
		}
	}
	if _, err := Resolve(nil, []string{"@nope"}); err == nil || !strings.Contains(err.Error(), "@nope") {
		t.Errorf("unknown group: %v", err)
	}
}
