package spec

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/berthd/berth/internal/errdefs"
)

// ErrInvalid is matched (errors.Is) by every ErrorList: the definitions are wrong and
// a person has to change them; retrying will not help.
var ErrInvalid = errdefs.ErrInvalid

// Error is one mistake in a definition, located by file, line, column and the field
// path inside the document (network.address, mounts[1].target).
type Error struct {
	File  string `json:"file"`
	Line  int    `json:"line,omitempty"`
	Col   int    `json:"col,omitempty"`
	Field string `json:"field,omitempty"`
	Msg   string `json:"message"`
	// Profile is set when the mistake is in a Profile document (File is the
	// profile's); Machines are the machines that use it and get the mistake.
	Profile  string   `json:"profile,omitempty"`
	Machines []string `json:"machines,omitempty"`
}

// Error formats the error as file:line:col: field: message, leaving out the parts
// that are unknown (a file that cannot be read has no line).
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Col > 0 {
			fmt.Fprintf(&b, ":%d", e.Col)
		}
	}
	b.WriteString(": ")
	if e.Profile != "" {
		fmt.Fprintf(&b, "in profile %s, ", e.Profile)
		if len(e.Machines) == 0 {
			b.WriteString("used by no machine: ")
		} else {
			b.WriteString("used by " + strings.Join(e.Machines, ", ") + ": ")
		}
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every error found in one Load or Parse, sorted by file, line,
// column. A non-empty ErrorList is what Load returns as its error.
type ErrorList []*Error

// Error prints one error per line.
func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true for an ErrorList.
func (l ErrorList) Is(target error) bool { return target == ErrInvalid }

// sort orders the list by position, then field and message, and drops exact
// duplicates (an alias used twice may report the same node twice).
func (l *ErrorList) sort() {
	s := *l
	sort.SliceStable(s, func(i, j int) bool {
		a, b := s[i], s[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Col != b.Col {
			return a.Col < b.Col
		}
		if a.Field != b.Field {
			return a.Field < b.Field
		}
		if a.Msg != b.Msg {
			return a.Msg < b.Msg
		}
		return a.Profile < b.Profile
	})
	out := s[:0]
	for i, e := range s {
		if i > 0 && sameMistake(e, s[i-1]) {
			// One mistake in a profile, found through several machines: one
			// error naming them all.
			last := out[len(out)-1]
			last.Machines = mergeNames(last.Machines, e.Machines)
			continue
		}
		out = append(out, e)
	}
	*l = out
}

func sameMistake(a, b *Error) bool {
	return a.File == b.File && a.Line == b.Line && a.Col == b.Col && a.Field == b.Field && a.Msg == b.Msg && a.Profile == b.Profile
}

// mergeNames is the sorted union of two lists of names.
func mergeNames(a, b []string) []string {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// err returns the list as an error, or nil when it is empty (never a typed nil).
func (l ErrorList) err() error {
	if len(l) == 0 {
		return nil
	}
	l.sort()
	return l
}
