package main

import (
	"fmt"

	"github.com/berthd/berth/machined"

	"github.com/spf13/cobra"
)

var removeFlags struct{ deleteData bool }

func init() {
	cmd := &cobra.Command{
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
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			var failed error
			for _, name := range args {
				size, err := s.RemoveRoot(name, false) // only measures
				if err == nil && removeFlags.deleteData {
					// Through berth's API: a machine still declared is refused
					// (berthd would make it a new root at once), and its address
					// leases and records go with its root.
					var api machined.API
					if api, err = connect(cmd.Context()); err == nil {
						err = api.Verb(cmd.Context(), name, "remove")
					}
				}
				if err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), "berth:", err)
					failed = &exitError{1, nil}
					continue
				}
				if removeFlags.deleteData {
					fmt.Fprintf(cmd.OutOrStdout(), "removed machine %s: deleted its root (freed %s)\n", name, humanBytes(size))
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "machine %s: its root (%s) is kept; add --delete-data to delete it\n", name, humanBytes(size))
				}
			}
			return failed
		},
	}
	cmd.Flags().BoolVar(&removeFlags.deleteData, "delete-data", false, "delete the machine's root filesystem")
	rootCmd.AddCommand(cmd)
}
