package container_test

import (
	"context"
	"os"
	"testing"

	"github.com/berthd/berth/container"
)

// The test binary is also the machine's init stage and the detached
// supervisor (as runc's integration tests do).
func init() {
	container.RegisterStage("test-supervise", func() {
		container.SuperviseStage(func(ctx context.Context, cfg container.Config) (container.Hooks, error) {
			return container.Hooks{}, nil
		})
	})
}

func TestMain(m *testing.M) {
	container.Reexec()
	os.Exit(m.Run())
}
