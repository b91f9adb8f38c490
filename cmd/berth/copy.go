package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/safecopy"
	"github.com/berthd/berth/internal/userns"
	"github.com/berthd/berth/rootfs"
)

// copyPaths is the help text both copy verbs share: how SRC and DST are
// read, owners, and what is not copied.
const copyPaths = `

SRC is copied itself: a file, a symbolic link (as a link) or a directory
with everything in it. When DST is an existing directory, or ends in /, SRC
goes into it under its own name; otherwise DST is the name SRC gets, in a
directory that must exist. Without DST, SRC's own path is used on the other
side. An existing directory is merged into (its own owner and mode kept); an
existing file is an error unless --force replaces it; a directory is never
replaced by a file, nor a file by a directory.

Modes (set-user-ID, set-group-ID and sticky bits included), access and
modification times, symbolic links and hard links within the copy are kept;
extended attributes, ACLs and file capabilities are not. Owners map through
the machine's user namespace as machinectl's do: the machine's user N is the
host's N (host users above 65535 become the machine's nobody, 65534; owners
the machine's range cannot hold come out as nobody). FIFOs, sockets and
device nodes are skipped and listed; only regular files' contents are read.
Every path inside the machine is resolved inside its root: a symbolic link
there never leads to a host file. Each file is written under a temporary
name and renamed into place when complete, so a failure leaves no half file.

The machine may be running (its root is reached through its init, with every
mount it has: /tmp, /run) or stopped (its root is mounted privately for the
copy and the machine cannot start meanwhile). No daemon is needed.`

func newCopyCmds() []*cobra.Command {
	return []*cobra.Command{
		newCopyCmd("copy-to", "Copy files from the host into a machine",
			`copy-to copies SRC, a path on the host, to DST, an absolute path in the
machine NAME.`+copyPaths,
			`  berth copy-to web ./site /srv/www/
  berth copy-to web /etc/resolv.conf          # to the same path inside
  berth copy-to --force web app.conf /etc/app/app.conf
  berth copy-to -o json web ./build /opt/app`),
		newCopyCmd("copy-from", "Copy files from a machine to the host",
			`copy-from copies SRC, an absolute path in the machine NAME, to DST, a path
on the host. Set-user-ID and set-group-ID bits of files that come out of a
machine are cleared: a program the guest made never becomes a set-ID program
on the host.`+copyPaths,
			`  berth copy-from web /var/log/app.log .
  berth copy-from web /etc/nginx /tmp/web-nginx
  berth copy-from web /srv/data                # to /srv/data on the host`),
	}
}

func newCopyCmd(verb, short, long, example string) *cobra.Command {
	var opt safecopy.Options
	c := &cobra.Command{
		Use:     verb + " NAME SRC [DST]",
		Short:   short,
		Long:    long,
		Example: example,
		Args:    cobra.RangeArgs(2, 3),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return completeMachines(cmd, args, toComplete)
			}
			// The host's side is completed as files; the machine's is not.
			if hostSide := (verb == "copy-to") == (len(args) == 1); hostSide {
				return nil, cobra.ShellCompDirectiveDefault
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name, src, dst := args[0], args[1], ""
			if len(args) == 3 {
				dst = args[2]
			}
			ctx, cancel := interruptible()
			defer cancel()
			sum, err := copyFiles(ctx, verb == "copy-to", name, src, dst, opt)
			if err != nil {
				return err
			}
			for _, s := range sum.Skipped {
				fmt.Fprintf(cmd.ErrOrStderr(), "berth: skipped %s: %s\n", s.Path, s.Reason)
			}
			return outputOf(cmd).print(sum, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "copied %s to %s: %s\n", sum.Source, sum.Destination, copyCounts(sum))
				return err
			})
		},
	}
	c.Flags().BoolVarP(&opt.Force, "force", "f", false, "replace existing files (never directories) at the destination")
	return c
}

// copyFiles opens the machine's root, running or stopped, and copies.
func copyFiles(ctx context.Context, to bool, name, src, dst string, opt safecopy.Options) (*safecopy.Summary, error) {
	g, done, err := openGuest(ctx, name)
	if err != nil {
		return nil, err
	}
	defer done()
	if to {
		return safecopy.CopyTo(ctx, g, src, dst, opt)
	}
	return safecopy.CopyFrom(ctx, g, src, dst, opt)
}

// openGuest reaches the machine's root: through its leader while it runs,
// else as a private mount of its root with the root lock held.
func openGuest(ctx context.Context, name string) (*safecopy.Guest, func(), error) {
	if err := rundir.CheckName(name); err != nil {
		return nil, nil, err
	}
	runDir := rundir.For(cliPaths().RuntimeDir, name).Path()
	root, users, err := container.OpenRunningRoot(runDir)
	if err == nil {
		g := &safecopy.Guest{Name: name, Root: int(root.Fd())}
		if users != nil {
			// Shifted or idmapped, the running machine's files show as
			// the range's IDs, and the idmapped root is written to only
			// as one of them.
			g.Private, g.Offset, g.FSUser = true, users.Base, true
		}
		return g, func() { root.Close() }, nil
	}
	if !errors.Is(err, container.ErrNotRunning) {
		return nil, nil, fmt.Errorf("machine %q: %w", name, err)
	}
	paths, _, err := resolvePaths(ctx)
	if err != nil {
		return nil, nil, err
	}
	if !rootfs.HasRoot(paths.StateDir, name) {
		if st, err := container.ReadState(runDir); err == nil && st.SupervisorAlive() {
			return nil, nil, fmt.Errorf("machine %q is %s: copy once it runs", name, st.Phase)
		}
		return nil, nil, fmt.Errorf("machine %q is not running and has no root under %s/machines: no such machine, or it never started", name, paths.StateDir)
	}
	s, err := rootfs.Open(paths.StateDir)
	if err != nil {
		return nil, nil, err
	}
	m, err := s.MountStopped(name)
	if errors.Is(err, rootfs.ErrBusy) {
		return nil, nil, fmt.Errorf("%w (it started while berth looked, or a clone or another copy holds it): try again", err)
	}
	if err != nil {
		return nil, nil, err
	}
	_, private, err := userns.Open(paths.StateDir).Get(name)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("machine %q: %w", name, err)
	}
	g := &safecopy.Guest{Name: name, Root: int(m.Root.Fd()), Offset: m.Shift, Private: private || m.Shift != 0}
	return g, func() { m.Close() }, nil
}

// copyCounts is a summary in words: "3 files, 2 directories, 1 symbolic
// link, 12.0 KB".
func copyCounts(s *safecopy.Summary) string {
	var parts []string
	add := func(n int, one, many string) {
		if n == 1 {
			parts = append(parts, "1 "+one)
		} else if n > 1 {
			parts = append(parts, fmt.Sprintf("%d %s", n, many))
		}
	}
	add(s.Files, "file", "files")
	add(s.Dirs, "directory", "directories")
	add(s.Symlinks, "symbolic link", "symbolic links")
	add(s.Hardlinks, "hard link", "hard links")
	parts = append(parts, humanBytes(s.Bytes))
	add(len(s.Skipped), "skipped", "skipped")
	add(s.Nobody, "owned by nobody", "owned by nobody")
	add(s.SetIDCleared, "set-ID bit cleared", "set-ID bits cleared")
	return strings.Join(parts, ", ")
}
