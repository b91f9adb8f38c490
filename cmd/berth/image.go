package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthd/berth/machined"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
)

// openStore opens the image and root store of the state directory: berthd's
// when one runs and no other was asked for (see resolvePaths).
func openStore() (*rootfs.Store, error) {
	paths, _, err := resolvePaths(context.Background())
	if err != nil {
		return nil, err
	}
	return rootfs.Open(paths.StateDir)
}

// interruptible returns a context cancelled by SIGINT or SIGTERM, so that long
// work stops cleanly (and leaves nothing half-made) on Ctrl-C.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

var imageFlags struct {
	sha256 string
	file   string
	force  bool
}

func init() {
	imageCmd := &cobra.Command{
		Use:   "image",
		Short: "Manage images: the read-only root filesystems machines are made from",
		Long: `Images are immutable root filesystem trees in the store (STATE/images), named and
identified by the digest of their content. A machine's root is made from an image
once and then persists; rebuilding an image does not change existing machines.`,
	}

	importCmd := &cobra.Command{
		Use:   "import NAME SOURCE",
		Short: "Import an image from a directory, a tar archive or an http(s) URL of one",
		Long: `Import an image from SOURCE: a directory (copied), a tar archive (.tar, .tar.gz,
.tar.xz, .tar.zst; the compression is told from the content) or an http(s) URL of
one. Owners, modes, setuid bits, xattrs, hard links and device nodes are kept.
Archives are unpacked safely: nothing in one can write outside the image. When
NAME exists it moves to the new content; machines made from the old content keep it.`,
		Example: `  berth image import debian-12 /var/lib/machines/debian
  berth image import alpine https://example.org/alpine-rootfs.tar.gz --sha256 4f2a…`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, location := args[0], args[1]
			var src rootfs.Source
			if fi, err := os.Stat(location); err == nil && fi.IsDir() {
				if imageFlags.sha256 != "" {
					return fmt.Errorf("--sha256 checks an archive; %s is a directory", location)
				}
				abs, _ := filepath.Abs(location)
				src = rootfs.Dir{Path: abs}
			} else {
				if !strings.Contains(location, "://") {
					if abs, err := filepath.Abs(location); err == nil {
						location = abs
					}
				}
				src = rootfs.Tar{Location: location, SHA256: imageFlags.sha256}
			}
			return importImage(cmd, name, src, "")
		},
	}
	importCmd.Flags().StringVar(&imageFlags.sha256, "sha256", "", "expected SHA-256 of the archive (64 hex digits)")

	buildCmd := &cobra.Command{
		Use:   "build -f FILE [NAME...]",
		Short: "Build the images an Image definition declares",
		Long: `Build the images that FILE (a YAML file or a directory of them) declares with
kind: Image — from a directory, a tar archive or debootstrap — or only those named.`,
		Example: `  berth image build -f images/debian.yaml
  berth image build -f examples/ debian-12`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if imageFlags.file == "" {
				// A usage error: exit code 2 means "changes pending" (plan).
				return &exitError{1, errors.New("image build: give the definition with -f FILE")}
			}
			set, err := spec.Load(imageFlags.file)
			if err != nil {
				return err
			}
			var imgs []*spec.Image
			if len(args) == 0 {
				imgs = set.Images
				if len(imgs) == 0 {
					return fmt.Errorf("%s declares no Image", imageFlags.file)
				}
			}
			for _, n := range args {
				img := set.Image(n)
				if img == nil {
					return fmt.Errorf("%s declares no Image named %q", imageFlags.file, n)
				}
				imgs = append(imgs, img)
			}
			for _, img := range imgs {
				// As berth apply does: an image built from this very definition is
				// kept (an image is immutable; rebuilding makes a new one).
				if !imageFlags.force {
					if s, err := openStore(); err == nil {
						if have, err := s.Image(img.Name); err == nil && have.SpecHash == img.Hash() {
							fmt.Fprintf(cmd.OutOrStdout(), "image %s is up to date (built from this definition %s); --force builds it again\n",
								img.Name, have.Created.Local().Format("2006-01-02 15:04"))
							continue
						}
					}
				}
				src, err := machined.ImageSource(img)
				if err != nil {
					return err
				}
				if err := importImage(cmd, img.Name, src, img.Hash()); err != nil {
					return err
				}
			}
			return nil
		},
	}
	buildCmd.Flags().StringVarP(&imageFlags.file, "file", "f", "", "file or directory with the Image definition")
	buildCmd.Flags().BoolVar(&imageFlags.force, "force", false, "build even when an image from the same definition exists")

	listCmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images: NAME DIGEST SIZE CREATED USED-BY",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			imgs, err := s.Images()
			if err != nil {
				return err
			}
			o := outputOf(cmd)
			if err := printList(o, imgs, imageHeader, imageRow); err != nil || o.json {
				return err
			}
			if len(imgs) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No images. Import one with: berth image import NAME DIR|FILE|URL")
			}
			return nil
		},
	}

	removeCmd := &cobra.Command{
		Use:     "remove NAME...",
		Aliases: []string{"rm"},
		Short:   "Remove images (refused while a machine was made from one)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			var failed error
			for _, n := range args {
				freed, err := s.RemoveImage(n)
				if err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), "berth:", err)
					failed = &exitError{1, nil}
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed image %s (freed %s)\n", n, humanBytes(freed))
			}
			return failed
		},
	}

	exportCmd := &cobra.Command{
		Use:   "export NAME FILE",
		Short: "Write an image as a tar archive (.tar, .tar.gz, .tar.xz, .tar.zst; - for zstd on stdout)",
		Long: `Write an image as a tar archive that berth image import turns back into the same
digest: numeric owners, modes, xattrs, hard links, device nodes and nanosecond
times are kept. The compression follows FILE's name; FILE "-" writes zstd to stdout.`,
		Example: `  berth image export debian-12 debian-12.tar.zst`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, file := args[0], args[1]
			s, err := openStore()
			if err != nil {
				return err
			}
			ctx, cancel := interruptible()
			defer cancel()
			pr := newProgress(cmd.ErrOrStderr())
			defer pr.Done()
			ctx = rootfs.WithProgress(ctx, pr.Rootfs())
			if file == "-" {
				return s.Export(ctx, name, cmd.OutOrStdout(), rootfs.CompressZstd)
			}
			c, err := rootfs.CompressionFor(file)
			if err != nil {
				return err
			}
			// Written beside FILE and renamed at the end: an interrupted export
			// leaves no truncated archive under the name.
			f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-*")
			if err != nil {
				return err
			}
			defer os.Remove(f.Name())
			defer f.Close()
			if err := s.Export(ctx, name, f, c); err != nil {
				return err
			}
			if err := f.Sync(); err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			if err := os.Rename(f.Name(), file); err != nil {
				return err
			}
			pr.Done()
			fi, _ := os.Stat(file)
			fmt.Fprintf(cmd.OutOrStdout(), "exported image %s to %s (%s)\n", name, file, humanBytes(fi.Size()))
			return nil
		},
	}

	pruneCmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove image content that no name and no machine uses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			res, err := s.Prune()
			if err != nil {
				return err
			}
			if res.Digests == nil {
				res.Digests = []string{}
			}
			return outputOf(cmd).print(res, func(w io.Writer) error {
				for _, d := range res.Digests {
					fmt.Fprintf(w, "removed %s\n", d)
				}
				_, err := fmt.Fprintf(w, "freed %s\n", humanBytes(res.Freed))
				return err
			})
		},
	}

	imageCmd.AddCommand(importCmd, buildCmd, listCmd, removeCmd, exportCmd, pruneCmd)
	rootCmd.AddCommand(imageCmd)
}

// importImage imports one image with progress shown and prints the result.
func importImage(cmd *cobra.Command, name string, src rootfs.Source, specHash string) error {
	s, err := openStore()
	if err != nil {
		return err
	}
	ctx, cancel := interruptible()
	defer cancel()
	pr := newProgress(cmd.ErrOrStderr())
	start := time.Now()
	img, err := s.Import(ctx, name, src, rootfs.ImportOptions{SpecHash: specHash, Progress: pr.Rootfs()})
	pr.Done()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("image %q: interrupted; nothing was stored", name)
		}
		return err
	}
	return outputOf(cmd).print(img, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "image %s: %s (%s, %d files) in %s\n", img.Name, img.Digest, humanBytes(img.Size), img.Files,
			time.Since(start).Round(100*time.Millisecond))
		return err
	})
}

// imageHeader and imageRow are berth image list's table.
var imageHeader = []string{"NAME", "DIGEST", "SIZE", "CREATED", "USED-BY"}

func imageRow(i rootfs.Image) []string {
	name := i.Name
	if name == "" {
		name = "<old>" // content that no name points to any more
	}
	return []string{name, shortDigest(i.Digest), humanBytes(i.Size), ago(i.Created), dash(strings.Join(i.UsedBy, ","))}
}
