package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthd/berth/rootfs"
)

// snapshotted is what berth snapshot restore and remove did, for -o json.
type snapshotted struct {
	Machine  string `json:"machine"`
	Snapshot string `json:"snapshot"`
	// Freed is what removing the snapshot freed.
	Freed int64 `json:"freed,omitempty"`
}

func newSnapshotCmd() *cobra.Command {
	create := func(cmd *cobra.Command, args []string) error {
		snap := ""
		if len(args) > 1 {
			snap = args[1]
		}
		var sn *rootfs.Snapshot
		err := storeWork(cmd, func(ctx context.Context, s *rootfs.Store) error {
			var err error
			sn, err = s.CreateSnapshot(ctx, args[0], snap)
			return err
		})
		if err != nil {
			return err
		}
		return outputOf(cmd).print(sn, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "snapshot %s of machine %s taken (%s, %s) in %s\n", sn.Name, sn.Machine, sn.Strategy,
				humanBytes(sn.Size), sn.Took.Round(time.Millisecond))
			return err
		})
	}
	long := `Take a snapshot named SNAP (default: the UTC time, 20261202-063012) of the
stopped machine NAME's root filesystem, made the way the root was: an overlay
root's own changes (its upper directory) are copied, cloned file by file where
the filesystem can, and the image layers are shared (and kept while the
snapshot is); a btrfs root is snapshotted as a subvolume; reflink roots are
cloned file by file; copy roots are copied. A running machine is refused: stop
it first. Snapshots live in STATE/snapshots/NAME/, apart from the root, so
removing or recreating the machine keeps them.

A machine named like one of the verbs below takes its snapshot with berth
snapshot create NAME [SNAP].`
	c := &cobra.Command{
		Use:   "snapshot NAME [SNAP]",
		Short: "Take, list, restore, remove and export snapshots of stopped machines' roots",
		Long:  long,
		Example: `  berth stop web && berth snapshot web before-upgrade && berth start web
  berth snapshot list web
  berth snapshot restore web before-upgrade --yes
  berth clone --snapshot before-upgrade web web-test`,
		Args:              cobra.MaximumNArgs(2),
		ValidArgsFunction: completeMachine,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			if err := notAVerb(cmd, args[0]); err != nil {
				return err
			}
			return create(cmd, args)
		},
	}
	c.AddCommand(&cobra.Command{
		Use:               "create NAME [SNAP]",
		Short:             "Take a snapshot of a stopped machine's root (as berth snapshot NAME [SNAP])",
		Long:              long,
		Example:           `  berth snapshot create web before-upgrade`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeMachine,
		RunE:              create,
	})
	c.AddCommand(newSnapshotListCmd(), newSnapshotRestoreCmd(), newSnapshotRemoveCmd(), newSnapshotExportCmd())
	return c
}

// notAVerb is the error for berth snapshot WORD when WORD names no machine
// root: a mistyped verb (berth snapshot lst) is told as one, as in the other
// command groups.
func notAVerb(cmd *cobra.Command, word string) error {
	paths, _, err := resolvePaths(cmd.Context())
	if err != nil {
		return err
	}
	if rootfs.HasRoot(paths.StateDir, word) || rootfs.ValidName(word) != nil {
		return nil // a root, or a name CreateSnapshot will tell what is wrong with
	}
	first, rest, _ := strings.Cut(unknownCommand(cmd, word).Error(), "\n")
	msg := first + fmt.Sprintf(", and machine %q has no root to snapshot", word)
	if rest != "" {
		msg += "\n" + rest
	}
	return errors.New(msg)
}

func newSnapshotListCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "list [NAME]",
		Aliases:           []string{"ls"},
		Short:             "List the snapshots of a machine, or of every machine",
		Example:           "  berth snapshot list\n  berth snapshot list web -o json",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeMachine,
		RunE: withStore(func(cmd *cobra.Command, s *rootfs.Store, args []string) error {
			machine := ""
			if len(args) > 0 {
				machine = args[0]
			}
			list, err := s.Snapshots(machine)
			if err != nil {
				return err
			}
			return printList(outputOf(cmd), list, []string{"MACHINE", "SNAPSHOT", "CREATED", "STRATEGY", "SIZE", "IMAGE"}, func(sn rootfs.Snapshot) []string {
				return []string{sn.Machine, sn.Name, sn.Created.Local().Format("2006-01-02 15:04:05") + " (" + ago(sn.Created) + ")",
					string(sn.Strategy), humanBytes(sn.Size), sn.Image}
			})
		}),
	}
}

func newSnapshotRestoreCmd() *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:   "restore NAME SNAP --yes",
		Short: "Make a stopped machine's root its snapshot again (its current data is lost)",
		Long: `Replace the root filesystem of the stopped machine NAME with a copy of its
snapshot SNAP (the snapshot stays). The root's current data is lost, so
restore asks for --yes; take a snapshot first (berth snapshot NAME) to keep it.
What is not in the root stays as it is: the machine's name and UUID (its
machine ID), its address leases and its UID range. The root takes the image
content the snapshot was of. A running machine is refused: stop it first. A
machine without a root (removed since) gets one from the snapshot.`,
		Example:           "  berth stop web\n  berth snapshot restore web before-upgrade --yes\n  berth start web",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeSnapshot,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return fmt.Errorf("machine %s: restoring snapshot %s replaces its root, and the root's current data is lost: add --yes (or take a snapshot first: berth snapshot %s)", args[0], args[1], args[0])
			}
			err := storeWork(cmd, func(ctx context.Context, s *rootfs.Store) error {
				_, err := s.RestoreSnapshot(ctx, args[0], args[1])
				return err
			})
			if err != nil {
				return err
			}
			return outputOf(cmd).print(snapshotted{Machine: args[0], Snapshot: args[1]}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "machine %s: root restored from snapshot %s\n", args[0], args[1])
				return err
			})
		},
	}
	c.Flags().BoolVarP(&yes, "yes", "y", false, "replace the root: its current data is lost")
	return c
}

func newSnapshotRemoveCmd() *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:     "remove NAME SNAP... --yes",
		Aliases: []string{"rm"},
		Short:   "Delete snapshots of a machine",
		Long: `Delete the snapshots SNAP... of the machine NAME. A snapshot is data: remove
asks for --yes. The image content only a removed snapshot kept goes at the next
berth image prune.`,
		Example:           "  berth snapshot remove web before-upgrade --yes",
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: completeSnapshot,
		RunE: withStore(func(cmd *cobra.Command, s *rootfs.Store, args []string) error {
			machine, snaps := args[0], args[1:]
			if !yes {
				return fmt.Errorf("machine %s: removing snapshots deletes their data: add --yes", machine)
			}
			o := outputOf(cmd)
			var done []snapshotted
			err := forEach(cmd, snaps, func(snap string) error {
				freed, err := s.RemoveSnapshot(machine, snap)
				if err != nil {
					return err
				}
				done = append(done, snapshotted{Machine: machine, Snapshot: snap, Freed: freed})
				if !o.json {
					fmt.Fprintf(o.w, "removed snapshot %s of machine %s (freed %s)\n", snap, machine, humanBytes(freed))
				}
				return nil
			})
			if o.json {
				_ = o.print(done, nil)
			}
			return err
		}),
	}
	c.Flags().BoolVarP(&yes, "yes", "y", false, "delete the snapshots")
	return c
}

func newSnapshotExportCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "export NAME SNAP FILE",
		Short: "Write a snapshot as a tar archive of the machine's tree",
		Long: `Write the snapshot SNAP of machine NAME as a tar archive (.tar, .tar.gz,
.tar.xz, .tar.zst, the compression following FILE's name; FILE "-" writes zstd
to stdout) of the tree the machine sees: an overlay snapshot merged with its
image layers. Owners are the machine's own (a root shifted into a UID range is
written unshifted), so berth image import makes an image of it.`,
		Example:           "  berth snapshot export web before-upgrade web.tar.zst\n  berth image import web-image web.tar.zst",
		Args:              cobra.ExactArgs(3),
		ValidArgsFunction: completeSnapshot,
		RunE: func(cmd *cobra.Command, args []string) error {
			machine, snap, file := args[0], args[1], args[2]
			var size int64
			err := storeWork(cmd, func(ctx context.Context, s *rootfs.Store) error {
				if file == "-" {
					return s.ExportSnapshot(ctx, machine, snap, cmd.OutOrStdout(), rootfs.CompressZstd)
				}
				var err error
				size, err = writeArchive(file, func(w io.Writer, c rootfs.Compression) error {
					return s.ExportSnapshot(ctx, machine, snap, w, c)
				})
				return err
			})
			if err != nil || file == "-" {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported snapshot %s of machine %s to %s (%s)\n", snap, machine, file, humanBytes(size))
			return nil
		},
	}
}

// completeSnapshot completes NAME, then the snapshots of NAME (berth snapshot
// restore NAME SNAP; remove NAME SNAP...; export NAME SNAP FILE).
func completeSnapshot(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) == 0 {
		return completeMachines(cmd, args, toComplete)
	}
	if cmd.Name() == "export" && len(args) == 2 {
		return nil, cobra.ShellCompDirectiveDefault // FILE
	}
	if cmd.Name() != "remove" && len(args) > 1 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return snapshotNames(args[0]), cobra.ShellCompDirectiveNoFileComp
}

// snapshotNames is the names of machine's snapshots, for completion.
func snapshotNames(machine string) []string {
	s, err := openStore()
	if err != nil {
		return nil
	}
	list, err := s.Snapshots(machine)
	if err != nil {
		return nil
	}
	var names []string
	for _, sn := range list {
		names = append(names, sn.Name)
	}
	return names
}
