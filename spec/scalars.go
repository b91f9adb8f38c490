package spec

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is an amount of bytes. In definitions it is written as a plain number of
// bytes or a number with a binary suffix as systemd reads them: K, M, G, T, P
// (1024-based; upper or lower case, optionally followed by B or iB), with an
// optional fraction: 512M, 2G, 1.5G, 1024K, 65536.
type Size int64

// Bytes returns the size in bytes.
func (s Size) Bytes() int64 { return int64(s) }

var sizeUnits = []struct {
	suffix byte
	shift  uint
}{{'K', 10}, {'M', 20}, {'G', 30}, {'T', 40}, {'P', 50}}

// String formats the size with the largest suffix that divides it exactly.
func (s Size) String() string {
	for i := len(sizeUnits) - 1; i >= 0; i-- {
		u := sizeUnits[i]
		if s != 0 && int64(s)%(1<<u.shift) == 0 {
			return strconv.FormatInt(int64(s)>>u.shift, 10) + string(u.suffix)
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// ParseSize reads a size as written in definitions (see Size).
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	// Strip an optional B / iB so 512MiB, 512MB and 512M read the same.
	switch {
	case len(t) > 2 && strings.EqualFold(t[len(t)-2:], "iB") && !isDigit(t[len(t)-3]):
		t = t[:len(t)-2]
	case len(t) > 1 && (t[len(t)-1] == 'B' || t[len(t)-1] == 'b'):
		t = t[:len(t)-1]
	}
	shift := uint(0)
	if n := len(t); n > 0 && !isDigit(t[n-1]) {
		c := t[n-1] &^ 0x20 // upper case
		found := false
		for _, u := range sizeUnits {
			if u.suffix == c {
				shift, found = u.shift, true
			}
		}
		if !found {
			return 0, fmt.Errorf("%q is not a size: use a number of bytes or a number with K, M, G, T or P (e.g. 512M, 1.5G)", s)
		}
		t = t[:n-1]
	}
	if t == "" || t[0] == '-' || t[0] == '+' {
		return 0, fmt.Errorf("%q is not a size: use a number of bytes or a number with K, M, G, T or P (e.g. 512M, 1.5G)", s)
	}
	if i, err := strconv.ParseUint(t, 10, 63); err == nil {
		if shift > 0 && i > math.MaxInt64>>shift {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return Size(i << shift), nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(t, "eExXpP_") {
		return 0, fmt.Errorf("%q is not a size: use a number of bytes or a number with K, M, G, T or P (e.g. 512M, 1.5G)", s)
	}
	b := f * float64(uint64(1)<<shift)
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(b), nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// Duration is a length of time, written in Go's syntax: 30s, 1m30s, 500ms, 2h. A
// plain number is seconds, as in systemd.
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration as Go does (1m30s).
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string ("30s"), the form definitions use.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads what MarshalJSON writes.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := ParseDuration(s)
	*d = v
	return err
}

// ParseDuration reads a duration as written in definitions (see Duration).
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	if n, err := strconv.ParseUint(t, 10, 32); err == nil {
		return Duration(time.Duration(n) * time.Second), nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: write it like 30s, 1m30s, 500ms or 2h", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return Duration(d), nil
}

// FileMode is a permission mode, written in octal as a string ("1777", "0755").
type FileMode uint32

// String formats the mode as four octal digits.
func (m FileMode) String() string { return fmt.Sprintf("%04o", uint32(m)) }

// MarshalJSON writes the mode as an octal string.
func (m FileMode) MarshalJSON() ([]byte, error) { return json.Marshal(m.String()) }

// UnmarshalJSON reads what MarshalJSON writes.
func (m *FileMode) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := ParseFileMode(s)
	*m = v
	return err
}

// ParseFileMode reads an octal mode of at most four digits (0 to 7777).
func ParseFileMode(s string) (FileMode, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), "0o")
	if t == "" || len(t) > 5 {
		return 0, fmt.Errorf("%q is not an octal mode: write it like \"0755\" or \"1777\"", s)
	}
	v, err := strconv.ParseUint(t, 8, 32)
	if err != nil || v > 0o7777 {
		return 0, fmt.Errorf("%q is not an octal mode: write it like \"0755\" or \"1777\"", s)
	}
	return FileMode(v), nil
}
