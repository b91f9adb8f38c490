package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berthd/berth/rootfs"
)

func newImageExportCmd() *cobra.Command {
	var format, ref string
	c := &cobra.Command{
		Use:   "export NAME FILE|DIR",
		Short: "Write an image as a tar archive or an OCI image layout",
		Long: `Write an image as a tar archive (the default) or as an OCI image layout.

A tar archive (.tar, .tar.gz, .tar.xz, .tar.zst, the compression following
FILE's name; FILE "-" writes zstd to stdout) is one tree that berth image import
turns back into the same digest: numeric owners, modes, xattrs, hard links,
device nodes and nanosecond times are kept. An OCI image's layers are merged
into it, as a copy root of the image has them.

An OCI image layout (--format oci DIR, or oci:DIR[:REF] as skopeo names it) is
what skopeo, umoci, podman and berth image pull oci:DIR read. An OCI image keeps
its layers, each written again from the store (its whiteouts as .wh. entries)
and gzipped; a tree image is one layer. DIR is made, or may be empty, or a
layout already, which keeps its other images; the image is named REF in it
(--ref, default NAME), replacing one of that name. The layers' diff IDs are the
tars berth writes: a layer pulled from elsewhere gets a new one, with the same
files, and an image pulled from berth's layout exports to the same again.`,
		Example: `  berth image export debian-12 debian-12.tar.zst
  berth image export alpine --format oci /srv/oci/alpine
  berth image export alpine oci:/srv/oci:alpine-3.20
  skopeo inspect oci:/srv/oci:alpine-3.20`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeImages,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, target := args[0], args[1]
			if rest, ok := strings.CutPrefix(target, "oci:"); ok {
				if format != "" && format != "oci" {
					return fmt.Errorf("image export: %s is an OCI layout, and --format says %s", target, format)
				}
				format, target = "oci", rest
				if dir, r, ok := strings.Cut(rest, ":"); ok {
					if ref != "" && ref != r {
						return fmt.Errorf("image export: %s names the ref %s, and --ref says %s", args[1], r, ref)
					}
					target, ref = dir, r
				}
			}
			switch format {
			case "", "tar":
				if ref != "" {
					return fmt.Errorf("image export: --ref names the image in an OCI layout: add --format oci")
				}
				return exportTar(cmd, name, target)
			case "oci":
				return exportOCI(cmd, name, target, ref)
			}
			return fmt.Errorf("image export: --format %q: use tar or oci", format)
		},
	}
	c.Flags().StringVar(&format, "format", "", "tar (the default) or oci: an OCI image layout directory")
	c.Flags().StringVar(&ref, "ref", "", "the image's name in the OCI layout (org.opencontainers.image.ref.name; default NAME)")
	return c
}

// exportTar is berth image export NAME FILE.
func exportTar(cmd *cobra.Command, name, file string) error {
	var size int64
	err := storeWork(cmd, func(ctx context.Context, s *rootfs.Store) error {
		if file == "-" {
			return s.Export(ctx, name, cmd.OutOrStdout(), rootfs.CompressZstd)
		}
		var err error
		size, err = exportFile(ctx, s, name, file)
		return err
	})
	if err != nil || file == "-" {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "exported image %s to %s (%s)\n", name, file, humanBytes(size))
	return nil
}

// exportOCI is berth image export NAME --format oci DIR.
func exportOCI(cmd *cobra.Command, name, dir, ref string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	var out *rootfs.OCIExport
	err = storeWork(cmd, func(ctx context.Context, s *rootfs.Store) error {
		var err error
		out, err = s.ExportOCI(ctx, name, abs, rootfs.OCIExportOptions{RefName: ref})
		return err
	})
	if err != nil {
		return err
	}
	return outputOf(cmd).print(out, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "exported image %s to the OCI layout %s as %s: %s [%s], %s, %s (read it with: berth image pull oci:%s:%s)\n",
			name, out.Dir, out.RefName, out.Digest, out.Platform, plural(len(out.Layers), "layer"), humanBytes(out.Size), out.Dir, out.RefName)
		return err
	})
}

// exportFile writes the image name to file (see writeArchive).
func exportFile(ctx context.Context, s *rootfs.Store, name, file string) (int64, error) {
	return writeArchive(file, func(w io.Writer, c rootfs.Compression) error { return s.Export(ctx, name, w, c) })
}

// writeArchive has export write an archive to file, compressed as file's
// name says, and returns its size: written beside file and renamed at the
// end, so an interrupted export leaves no truncated archive under the name.
func writeArchive(file string, export func(w io.Writer, c rootfs.Compression) error) (int64, error) {
	c, err := rootfs.CompressionFor(file)
	if err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := export(f, c); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(f.Name(), file); err != nil {
		return 0, err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
