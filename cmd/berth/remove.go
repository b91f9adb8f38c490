package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berthd/berth/rootfs"
)

// removed is what berth remove did to one machine, for -o json: its root
// deleted, or kept and its size.
type removed struct {
	Machine string `json:"machine"`
	Deleted bool   `json:"deleted"`
	Size    int64  `json:"size"`
}

func newRemoveCmd() *cobra.Command {
	var deleteData bool
	c := &cobra.Command{
		Use:     "remove NAME...",
		Aliases: []string{"rm"},
		Short:   "Remove a stopped machine's root (its data only with --delete-data)",
		Long: `Remove stopped machines. A machine's root filesystem is its data: without
--delete-data it is kept (and used again if the machine is declared again), and
berth only tells how much space deleting it would free. With --delete-data the
root is deleted. A running machine is refused: stop it first. remove stops nothing.`,
		Example: `  berth remove old-web                # keeps the data, shows its size
  berth remove old-web --delete-data  # deletes the root`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeMachines,
		RunE: withStore(func(cmd *cobra.Command, s *rootfs.Store, args []string) error {
			o := outputOf(cmd)
			var done []removed
			err := forEach(cmd, args, func(name string) error {
				size, err := s.RemoveRoot(name, false) // only measures
				if err != nil {
					return err
				}
				if !deleteData {
					done = append(done, removed{Machine: name, Size: size})
					if !o.json {
						fmt.Fprintf(o.w, "machine %s: its root (%s) is kept; add --delete-data to delete it\n", name, humanBytes(size))
					}
					return nil
				}
				// Through berth's API: a machine still declared is refused
				// (berthd would make it a new root at once), and its address
				// leases and records go with its root.
				ctl, err := connect(cmd.Context())
				if err == nil {
					err = ctl.Verb(cmd.Context(), name, "remove")
				}
				if err != nil {
					return err
				}
				done = append(done, removed{Machine: name, Size: size, Deleted: true})
				if !o.json {
					fmt.Fprintf(o.w, "removed machine %s: deleted its root (freed %s)\n", name, humanBytes(size))
					if sns, err := s.Snapshots(name); err == nil && len(sns) > 0 {
						fmt.Fprintf(o.w, "machine %s: %s of it kept (berth snapshot list %s; berth snapshot remove %s SNAP... --yes)\n",
							name, plural(len(sns), "snapshot"), name, name)
					}
				}
				return nil
			})
			if o.json {
				_ = o.print(done, nil)
			}
			return err
		}),
	}
	c.Flags().BoolVar(&deleteData, "delete-data", false, "delete the machine's root filesystem")
	return c
}
