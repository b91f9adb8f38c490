package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthd/berth/rootfs"
)

func newCloneCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "clone SRC DST",
		Short: "Copy a stopped machine's root to a new machine",
		Long: `Copy the root filesystem of the stopped machine SRC to a new machine root DST,
the way SRC's root was made: for an overlay root only SRC's own changes are copied
and the image layer is shared; a btrfs root is snapshotted. Declare DST (a Machine
definition with name DST) to run it; berth keeps the cloned root.`,
		Example:           `  berth clone web web-staging`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeMachine,
		RunE: func(cmd *cobra.Command, args []string) error {
			var r *rootfs.Root
			var took time.Duration
			err := storeWork(cmd, func(ctx context.Context, s *rootfs.Store) error {
				start := time.Now()
				var err error
				r, err = s.CloneRoot(ctx, args[0], args[1])
				took = time.Since(start)
				return err
			})
			if err != nil {
				return err
			}
			return outputOf(cmd).print(r, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "cloned %s to %s (%s, image %s) in %s\n", args[0], args[1], r.Strategy, r.Image,
					took.Round(time.Millisecond))
				return err
			})
		},
	}
}
