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
	var snap string
	c := &cobra.Command{
		Use:   "clone SRC DST",
		Short: "Copy a stopped machine's root (or one of its snapshots) to a new machine",
		Long: `Copy the root filesystem of the stopped machine SRC to a new machine root DST,
the way SRC's root was made: for an overlay root only SRC's own changes are copied
and the image layer is shared; a btrfs root is snapshotted. With --snapshot SNAP
the copy is of SRC's snapshot SNAP instead, and SRC may be running. Declare DST
(a Machine definition with name DST) to run it; berth keeps the cloned root. DST
gets its own machine ID at its first boot.`,
		Example:           "  berth clone web web-staging\n  berth clone --snapshot before-upgrade web web-test",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeMachine,
		RunE: func(cmd *cobra.Command, args []string) error {
			var r *rootfs.Root
			var took time.Duration
			err := storeWork(cmd, func(ctx context.Context, s *rootfs.Store) error {
				start := time.Now()
				var err error
				if snap != "" {
					r, err = s.CloneSnapshot(ctx, args[0], snap, args[1])
				} else {
					r, err = s.CloneRoot(ctx, args[0], args[1])
				}
				took = time.Since(start)
				return err
			})
			if err != nil {
				return err
			}
			from := args[0]
			if snap != "" {
				from += " (snapshot " + snap + ")"
			}
			return outputOf(cmd).print(r, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "cloned %s to %s (%s, image %s) in %s\n", from, args[1], r.Strategy, r.Image,
					took.Round(time.Millisecond))
				return err
			})
		},
	}
	c.Flags().StringVar(&snap, "snapshot", "", "copy SRC's snapshot SNAP instead of its root (SRC may run)")
	_ = c.RegisterFlagCompletionFunc("snapshot", func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return snapshotNames(args[0]), cobra.ShellCompDirectiveNoFileComp
	})
	return c
}
