// Package errdefs is berth's one error vocabulary (as containerd's errdefs):
// a few classes that every package wraps its errors in when they fall in one,
// checked with errors.Is, and mapped once at berthd's API so that a person
// sees the same class and message from berthd as from the CLI's local mode.
package errdefs

import (
	"errors"
	"fmt"
)

// The classes. Each error's own text names the object and what to change;
// the class says what kind of failure it is.
var (
	// ErrInvalid: a request that can never succeed as given (a bad
	// definition, flag, address, name): it must change.
	ErrInvalid = errors.New("invalid")
	// ErrNotFound: something the request names does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: something already there is in the way (a name taken, an
	// address leased to another machine).
	ErrExists = errors.New("already exists")
	// ErrConflict: the object is not in a state that allows the request (a
	// machine that is not running, one declared stopped).
	ErrConflict = errors.New("conflict")
	// ErrBusy: the object is in use (a running machine's root, a bridge with
	// machines on it).
	ErrBusy = errors.New("in use")
	// ErrUnsupported: this host or filesystem cannot do it.
	ErrUnsupported = errors.New("not supported")
	// ErrExhausted: a pool has nothing left (a subnet without free addresses).
	ErrExhausted = errors.New("exhausted")
)

// classes maps each class to its name on the API and its HTTP status, as
// numbers: net/http (and TLS with it) would otherwise be linked into every
// binary that classes errors, berth-stage among them.
var classes = []struct {
	err    error
	name   string
	status int
}{
	{ErrInvalid, "invalid", 400},    // Bad Request
	{ErrNotFound, "not_found", 404}, // Not Found
	{ErrExists, "exists", 409},      // Conflict
	{ErrConflict, "conflict", 409},
	{ErrBusy, "busy", 409},
	{ErrUnsupported, "unsupported", 501}, // Not Implemented
	{ErrExhausted, "exhausted", 507},     // Insufficient Storage
}

// Class returns the name of err's class ("" when it has none) and the HTTP
// status berthd answers it with.
func Class(err error) (name string, status int) {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.name, c.status
		}
	}
	return "", 500 // Internal Server Error
}

// FromClass rebuilds an error that crossed the API: its text as the other
// side made it, and its class, so errors.Is works on this side too.
func FromClass(msg, class string) error {
	for _, c := range classes {
		if c.name == class {
			return &classError{msg: msg, class: c.err}
		}
	}
	return errors.New(msg)
}

type classError struct {
	msg   string
	class error
}

func (e *classError) Error() string        { return e.msg }
func (e *classError) Is(target error) bool { return target == e.class }

// Errorf formats an error of a class: errors.Is(err, class) holds while the
// text is the message alone (no ": not supported" glued on). %w verbs in
// format still wrap.
func Errorf(class error, format string, args ...any) error {
	return &classedError{err: fmt.Errorf(format, args...), class: class}
}

type classedError struct {
	err   error
	class error
}

func (c *classedError) Error() string   { return c.err.Error() }
func (c *classedError) Unwrap() []error { return []error{c.err, c.class} }
