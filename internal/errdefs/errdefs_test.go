package errdefs

import (
	"errors"
	"fmt"
	"testing"
)

// TestRoundTrip: every class survives the API: a wrapped error of the class
// maps to a name and status, and comes back with its text and class.
func TestRoundTrip(t *testing.T) {
	for _, c := range classes {
		err := fmt.Errorf("machine %q: %w", "web", c.err)
		name, status := Class(err)
		if name != c.name || status != c.status {
			t.Errorf("%v: class %q %d, want %q %d", c.err, name, status, c.name, c.status)
		}
		back := FromClass(err.Error(), name)
		if !errors.Is(back, c.err) || back.Error() != err.Error() {
			t.Errorf("%v came back as %v (is: %v)", err, back, errors.Is(back, c.err))
		}
	}
	if name, status := Class(errors.New("plain")); name != "" || status != 500 {
		t.Errorf("a plain error: %q %d", name, status)
	}
}

// TestErrorf: the error is of its class and of what it wraps, and its text is
// the message alone.
func TestErrorf(t *testing.T) {
	inner := errors.New("disk on fire")
	err := Errorf(ErrUnsupported, "machine %q: %w", "web", inner)
	if !errors.Is(err, ErrUnsupported) || !errors.Is(err, inner) || errors.Is(err, ErrInvalid) {
		t.Errorf("Errorf's classes: %v", err)
	}
	if err.Error() != `machine "web": disk on fire` {
		t.Errorf("Errorf's text: %q", err)
	}
}
