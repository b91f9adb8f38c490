package netconf

import "errors"

// Error classes, checked with errors.Is. Every error netconf returns wraps one of
// these when it falls in the class, and its text names the object and what to do.
var (
	// ErrInvalid: a request that can never succeed as given (a bad address,
	// name, port or protocol): the definition must change.
	ErrInvalid = errors.New("invalid")
	// ErrExists: something already on the host is in the way (an address in
	// use, a link of the same name that is not the machine's own, an address
	// leased to another machine).
	ErrExists = errors.New("already exists")
	// ErrNotFound: something the request needs is missing (a bridge that
	// berth does not manage, a process whose namespace is gone).
	ErrNotFound = errors.New("not found")
	// ErrBusy: the object is still in use (a bridge with machines on it).
	ErrBusy = errors.New("in use")
	// ErrExhausted: a subnet has no free address left.
	ErrExhausted = errors.New("no free address")
)
