package cpuset

import (
	"bytes"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in, want, err string
		mask          []byte
	}{
		{in: "0", want: "0", mask: []byte{0x01}},
		{in: "0-1", want: "0-1", mask: []byte{0x03}},
		{in: " 3, 1 ,2", want: "1-3", mask: []byte{0x0e}},
		{in: "0-3,8,10-11", want: "0-3,8,10-11", mask: []byte{0x0f, 0x0d}},
		{in: "9,0-1,1", want: "0-1,9", mask: []byte{0x03, 0x02}},
		{in: "5-5", want: "5", mask: []byte{0x20}},
		{in: "", err: "empty CPU list"},
		{in: " ", err: "empty CPU list"},
		{in: "a", err: `"a" is not a CPU list item`},
		{in: "1,", err: `"" is not a CPU list item`},
		{in: "-1", err: `"-1" is not a CPU list item`},
		{in: "+1", err: `"+1" is not a CPU list item`},
		{in: "3-1", err: "from the lower CPU to the higher (1-3)"},
		{in: "0-", err: `"0-" is not a CPU list item`},
		{in: "1-2-3", err: `"1-2-3" is not a CPU list item`},
		{in: "8192", err: "above the kernel's limit (8191)"},
	} {
		s, err := Parse(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Parse(%q) = %v, %v; want error with %q", c.in, s, err, c.err)
			}
			continue
		}
		if err != nil || s.String() != c.want || !bytes.Equal(s.Mask(), c.mask) {
			t.Errorf("Parse(%q) = %q mask %x, %v; want %q mask %x", c.in, s, s.Mask(), err, c.want, c.mask)
		}
	}
}

func TestUnionMissing(t *testing.T) {
	a, _ := Parse("0-2")
	b, _ := Parse("2-4,7")
	if got := a.Union(b).String(); got != "0-4,7" {
		t.Errorf("union %s", got)
	}
	if got := b.Missing(a).String(); got != "3-4,7" {
		t.Errorf("missing %s", got)
	}
	if got := a.Missing(a.Union(b)); len(got) != 0 {
		t.Errorf("missing %s", got)
	}
}
