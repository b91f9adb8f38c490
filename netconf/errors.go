package netconf

import "github.com/berthd/berth/internal/errdefs"

// Error classes, checked with errors.Is: berth's one vocabulary (errdefs). Every error netconf returns wraps one of
// these when it falls in the class, and its text names the object and what to do.
var (
	// ErrInvalid: a request that can never succeed as given (a bad address,
	// name, port or protocol): the definition must change.
	ErrInvalid = errdefs.ErrInvalid
	// ErrExists: something already on the host is in the way (an address in
	// use, a link of the same name that is not the machine's own, an address
	// leased to another machine).
	ErrExists = errdefs.ErrExists
	// ErrNotFound: something the request needs is missing (a bridge that
	// berth does not manage, a process whose namespace is gone).
	ErrNotFound = errdefs.ErrNotFound
	// ErrBusy: the object is still in use (a bridge with machines on it).
	ErrBusy = errdefs.ErrBusy
	// ErrExhausted: a subnet has no free address left.
	ErrExhausted = errdefs.ErrExhausted
)
