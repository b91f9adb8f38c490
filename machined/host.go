package machined

import (
	"context"
	"errors"
)

// errNotWired is returned until the leaf packages are wired into the reconciler.
var errNotWired = errors.New("the machine host is not wired yet")

// OpenLocal returns a manager in the calling process, for CLI verbs when no
// daemon runs.
func OpenLocal(p Paths) (*Manager, error) { return nil, errNotWired }

// Main runs berthd with cfg until ctx ends.
func Main(ctx context.Context, cfg *Config) error { return errNotWired }
