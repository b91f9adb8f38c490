package api

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/rootfs"
)

// failingAPI answers every verb with one error.
type failingAPI struct {
	API
	err error
}

func (f failingAPI) Verb(ctx context.Context, name, verb string) error { return f.err }
func (f failingAPI) Verbs(ctx context.Context, req VerbRequest) ([]VerbOutcome, error) {
	return nil, f.err
}

// TestErrorClassesCrossTheAPI: an error of any package keeps its class and
// its text across berthd's socket, so the CLI says the same from berthd as
// in local mode (rootfs.ErrBusy used to arrive as a classless 500).
func TestErrorClassesCrossTheAPI(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	for _, class := range []error{rootfs.ErrBusy, netconf.ErrExhausted, errdefs.ErrInvalid, errdefs.ErrNotFound, errdefs.ErrConflict, rootfs.ErrUnsupported, netconf.ErrExists} {
		ctx, cancel := context.WithCancel(context.Background())
		want := fmt.Errorf("machine %q: remove its root: %w", "web", class)
		done := make(chan error, 1)
		go func() { done <- Serve(ctx, sock, failingAPI{err: want}) }()
		var c *Client
		var err error
		for i := 0; i < 200; i++ {
			if c, err = Dial(ctx, sock); err == nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		got := c.Verb(ctx, "web", "remove")
		if !errors.Is(got, class) || got.Error() != want.Error() {
			name, _ := errdefs.Class(want)
			t.Errorf("%s: the client got %v (is %v: %v)", name, got, class, errors.Is(got, class))
		}
		cancel()
		<-done
	}
}
