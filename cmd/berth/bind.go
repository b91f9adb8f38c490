package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/berthd/berth/container"
)

func newBindCmd() *cobra.Command {
	var o container.BindOptions
	idmap := true
	c := &cobra.Command{
		Use:   "bind NAME SRC [DST]",
		Short: "Bind a host directory or file into a running machine, without a restart",
		Long: `bind mounts the host's directory or file SRC on DST (default: the same path)
inside the running machine NAME, as machinectl bind does for nspawn machines.
The bind lasts until the machine stops or reboots, or the guest unmounts it;
to keep one, add it to the machine's definition (mounts).

The bind is recursive (mounts below SRC come along) and arrives through the
machine's /run/host/incoming, so in a machine with private users (the default)
the guest's root can neither make a --read-only bind writable nor unmount a
mount below SRC to see what it covers. It is idmapped by default, as a
definition's binds are: a host file of UID 1000 is 1000's inside too
(--idmap=false shows the unmapped view, where host owners outside the machine's
range are nobody). DST is resolved inside the machine's root: a symlink the
guest planted never leads out of it. --mkdir makes a missing DST (a directory,
or an empty file for a file SRC) as the machine's root.

machinectl bind works too on machines with privateUsers: false; for machines
with private users systemd-machined refuses it ("Can't bind mount on
container with user namespacing applied"): use berth bind. No daemon is
needed.`,
		Example: `  berth bind web /srv/data
  berth bind web /srv/data /var/lib/data --mkdir
  berth bind web /etc/ssl/certs /etc/ssl/host-certs --read-only --mkdir
  berth bind web /srv/site /var/www -o json`,
		Args:              cobra.RangeArgs(2, 3),
		ValidArgsFunction: completeMachineThenFiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			runDir, err := machineRunDir(name)
			if err != nil {
				return err
			}
			if o.Source, err = filepath.Abs(args[1]); err != nil {
				return err
			}
			o.Target = o.Source
			if len(args) == 3 {
				o.Target = args[2]
			}
			if !filepath.IsAbs(o.Target) {
				return fmt.Errorf("bind: DST %q must be an absolute path in the machine", o.Target)
			}
			o.NoIdmap = !idmap
			res, err := bindInto(cmd, runDir, o)
			if errors.Is(err, container.ErrNotRunning) {
				return fmt.Errorf("machine %q is not running", name)
			}
			if err != nil {
				return err
			}
			return outputOf(cmd).print(res, func(w io.Writer) error {
				how := "read-write"
				if res.ReadOnly {
					how = "read-only"
				}
				if res.Idmapped {
					how += ", idmapped"
				}
				_, err := fmt.Fprintf(w, "%s bound on %s:%s (%s)\n", res.Source, res.Machine, res.Target, how)
				return err
			})
		},
	}
	f := c.Flags()
	f.BoolVar(&o.ReadOnly, "read-only", false, "bind read-only (with every mount below SRC)")
	f.BoolVar(&o.Mkdir, "mkdir", false, "make DST in the machine when it is missing")
	f.BoolVar(&idmap, "idmap", true, "in a machine with private users, map the owners into its range (false: the unmapped view)")
	return c
}

// bindInto asks the machine's supervisor, over its control socket, to bind.
func bindInto(cmd *cobra.Command, runDir string, o container.BindOptions) (container.BindResult, error) {
	c, err := container.Dial(runDir)
	if err != nil {
		return container.BindResult{}, err
	}
	return c.Bind(cmd.Context(), o)
}

// completeMachineThenFiles completes a machine name first, then paths.
func completeMachineThenFiles(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) == 0 {
		return completeMachines(cmd, args, toComplete)
	}
	return nil, cobra.ShellCompDirectiveDefault
}
