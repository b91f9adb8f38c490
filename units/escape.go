package units

import (
	"fmt"
	"strings"
)

// EscapeUnitName escapes s for use as one component of a unit name, the way
// systemd's unit_name_escape() and `systemd-escape` do: "/" becomes "-", and
// every byte other than ASCII letters, digits, ":", "_" and "." (and a leading
// ".") becomes \xNN. So machine "web-1" has the scope machine-web\x2d1.scope,
// the same name systemd-machined gives a machine of that name.
func EscapeUnitName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c == '.' && i == 0,
			!(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ':' || c == '_' || c == '.'):
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// ScopeName is the transient scope unit of a machine: machine-NAME.scope with
// NAME escaped, as systemd-machined names the scopes it makes.
func ScopeName(machine string) string {
	return "machine-" + EscapeUnitName(machine) + ".scope"
}

// MachineSlice is the slice every machine scope lives in, like nspawn's.
const MachineSlice = "machine.slice"
