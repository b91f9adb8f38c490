package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthd/berth/machined/host"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
)

func newImageCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "image",
		Short: "Manage images: the read-only root filesystems machines are made from",
		Long: `Images are immutable root filesystem trees in the store (STATE/images), named and
identified by the digest of their content. A machine's root is made from an image
once and then persists; rebuilding an image does not change existing machines.

An OCI image (berth image pull, or an Image definition's registry, ociLayout or
dockerArchive) is kept as its layers, each stored once whatever images share it,
and identified by its manifest's digest; a machine's root is an overlay of them.`,
	}
	c.AddCommand(newImageImportCmd(), newImagePullCmd(), newImageBuildCmd(), newImageListCmd(), newImageRemoveCmd(),
		newImageExportCmd(), newImagePruneCmd())
	return c
}

func newImageImportCmd() *cobra.Command {
	var sha256 string
	c := &cobra.Command{
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
			src, err := importSource(args[1], sha256)
			if err != nil {
				return err
			}
			return importImage(cmd, args[0], src, "")
		},
	}
	c.Flags().StringVar(&sha256, "sha256", "", "expected SHA-256 of the archive (64 hex digits)")
	return c
}

// importSource is what berth image import reads: the directory location, or
// else the archive location (a file or a URL) with its expected SHA-256.
func importSource(location, sha256 string) (rootfs.Source, error) {
	if fi, err := os.Stat(location); err == nil && fi.IsDir() {
		if sha256 != "" {
			return nil, fmt.Errorf("--sha256 checks an archive; %s is a directory", location)
		}
		abs, _ := filepath.Abs(location)
		return rootfs.Dir{Path: abs}, nil
	}
	if !strings.Contains(location, "://") {
		if abs, err := filepath.Abs(location); err == nil {
			location = abs
		}
	}
	return rootfs.Tar{Location: location, SHA256: sha256}, nil
}

func newImageBuildCmd() *cobra.Command {
	var file string
	var force bool
	c := &cobra.Command{
		Use:   "build -f FILE [NAME...]",
		Short: "Build the images an Image definition declares",
		Long: `Build the images that FILE (a YAML file or a directory of them) declares with
kind: Image — from a directory, a tar archive, debootstrap, or an OCI image in a
registry, an OCI layout or a docker archive (pulled as berth image pull does) —
or only those named.`,
		Example: `  berth image build -f images/debian.yaml
  berth image build -f examples/ debian-12`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				// A usage error: exit code 2 means "changes pending" (plan).
				return &exitError{1, errors.New("image build: give the definition with -f FILE")}
			}
			imgs, err := declaredImages(file, args)
			if err != nil {
				return err
			}
			for _, img := range imgs {
				if err := buildImage(cmd, img, force); err != nil {
					return err
				}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "file or directory with the Image definition")
	c.Flags().BoolVar(&force, "force", false, "build even when an image from the same definition exists")
	return c
}

// declaredImages loads the definitions in file and returns the images they
// declare, or only those named.
func declaredImages(file string, names []string) ([]*spec.Image, error) {
	set, err := spec.Load(file)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		if len(set.Images) == 0 {
			return nil, fmt.Errorf("%s declares no Image", file)
		}
		return set.Images, nil
	}
	var imgs []*spec.Image
	for _, n := range names {
		img := set.Image(n)
		if img == nil {
			return nil, fmt.Errorf("%s declares no Image named %q", file, n)
		}
		imgs = append(imgs, img)
	}
	return imgs, nil
}

// buildImage builds img. As berth apply does, it keeps an image built from
// this very definition unless forced (an image is immutable; rebuilding makes
// a new one).
func buildImage(cmd *cobra.Command, img *spec.Image, force bool) error {
	if !force {
		if s, err := openStore(); err == nil {
			if have, err := s.Image(img.Name); err == nil && have.SpecHash == img.Hash() {
				return outputOf(cmd).print(have, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "image %s is up to date (built from this definition %s); --force builds it again\n",
						img.Name, have.Created.Local().Format("2006-01-02 15:04"))
					return err
				})
			}
		}
	}
	src, err := host.ImageSource(img)
	if err != nil {
		return err
	}
	return importImage(cmd, img.Name, src, img.Hash())
}

// importImage imports one image with progress shown and prints the result.
func importImage(cmd *cobra.Command, name string, src rootfs.Source, specHash string) error {
	var img *rootfs.Image
	var took time.Duration
	err := storeWork(cmd, func(ctx context.Context, s *rootfs.Store) error {
		start := time.Now()
		var err error
		img, err = s.Import(ctx, name, src, rootfs.ImportOptions{SpecHash: specHash})
		took = time.Since(start)
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("image %q: interrupted; nothing was stored (the layers stored whole stay for the next pull)", name)
		}
		return err
	})
	if err != nil {
		return err
	}
	return outputOf(cmd).print(img, func(w io.Writer) error {
		_, err := fmt.Fprintln(w, importedText(img, took))
		return err
	})
}

// importedText is the line an import prints:
//
//	image tiny: sha256:… (12 KiB, 5 files) in 0.1s
//	image debian: docker.io/library/debian:bookworm sha256:… [linux/amd64]: 1 layer, 117 MiB in 9.2s
func importedText(img *rootfs.Image, took time.Duration) string {
	t := took.Round(100 * time.Millisecond)
	if img.Kind != rootfs.ImageKindOCI {
		return fmt.Sprintf("image %s: %s (%s, %d files) in %s", img.Name, img.Digest, humanBytes(img.Size), img.Files, t)
	}
	s := fmt.Sprintf("image %s: %s %s [%s]: %s, %s", img.Name, img.Ref, img.Digest, img.Platform, plural(len(img.Layers), "layer"), humanBytes(img.Size))
	if img.Shared > 0 {
		s += fmt.Sprintf(" (%s of it shared with other images)", humanBytes(img.Shared))
	}
	return s + " in " + t.String()
}

func newImageListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images: NAME DIGEST SOURCE SIZE SHARED LAYERS CREATED USED-BY",
		Long: `List the images: their name, digest, where they came from (an OCI image's
reference, a tree's directory, archive or debootstrap suite), their disk usage
(an OCI image's layers, each once), the part of it in layers that other images
share, their number of layers (an OCI image's), when they were made and the
machines made from them. -o json has everything, an OCI image's layers too.`,
		Example: `  berth image list
  berth image list -o json`,
		Args: cobra.NoArgs,
		RunE: withStore(func(cmd *cobra.Command, s *rootfs.Store, args []string) error {
			imgs, err := s.Images()
			if err != nil {
				return err
			}
			o := outputOf(cmd)
			if err := printList(o, imgs, imageHeader, imageRow); err != nil || o.json {
				return err
			}
			if len(imgs) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No images. Import one with: berth image import NAME DIR|FILE|URL, or pull one: berth image pull REF")
			}
			return nil
		}),
	}
}

// imageHeader and imageRow are berth image list's table.
var imageHeader = []string{"NAME", "DIGEST", "SOURCE", "SIZE", "SHARED", "LAYERS", "CREATED", "USED-BY"}

func imageRow(i rootfs.Image) []string {
	name := i.Name
	if name == "" {
		name = "<old>" // content that no name points to any more
	}
	source, shared, layers := i.Source, "-", "-"
	if i.Kind == rootfs.ImageKindOCI {
		source, shared, layers = i.Ref, humanBytes(i.Shared), fmt.Sprint(len(i.Layers))
	}
	source, _, _ = strings.Cut(source, "#sha256=") // a tar's pinned sum: in -o json
	return []string{name, shortDigest(i.Digest), dash(source), humanBytes(i.Size), shared, layers, ago(i.Created), dash(strings.Join(i.UsedBy, ","))}
}

func newImageRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "remove NAME...",
		Aliases:           []string{"rm"},
		Short:             "Remove images (refused while a machine was made from one)",
		Example:           `  berth image remove debian-12 old`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeImages,
		RunE: withStore(func(cmd *cobra.Command, s *rootfs.Store, args []string) error {
			o := outputOf(cmd)
			type removedImage struct {
				Image string `json:"image"`
				Freed int64  `json:"freed"`
			}
			var done []removedImage
			err := forEach(cmd, args, func(name string) error {
				freed, err := s.RemoveImage(name)
				if err != nil {
					return err
				}
				done = append(done, removedImage{name, freed})
				if !o.json {
					fmt.Fprintf(o.w, "removed image %s (freed %s)\n", name, humanBytes(freed))
				}
				return nil
			})
			if o.json {
				_ = o.print(done, nil)
			}
			return err
		}),
	}
}

func newImagePruneCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "prune",
		Short: "Remove image content and layers that no name and no machine uses",
		Example: `  berth image prune
  berth image prune -o json`,
		Args: cobra.NoArgs,
		RunE: withStore(func(cmd *cobra.Command, s *rootfs.Store, args []string) error {
			res, err := s.Prune()
			if err != nil {
				return err
			}
			if res.Digests == nil {
				res.Digests = []string{}
			}
			if res.Layers == nil {
				res.Layers = []string{}
			}
			return outputOf(cmd).print(res, func(w io.Writer) error {
				for _, d := range res.Digests {
					fmt.Fprintf(w, "removed image %s\n", d)
				}
				for _, l := range res.Layers {
					fmt.Fprintf(w, "removed layer %s\n", l)
				}
				_, err := fmt.Fprintf(w, "freed %s: %s, %s\n", humanBytes(res.Freed), plural(len(res.Digests), "image"), plural(len(res.Layers), "layer"))
				return err
			})
		}),
	}
}
