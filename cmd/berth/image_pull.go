package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/rootfs"
)

// pullFlags are berth image pull's flags.
type pullFlags struct {
	platform string
	authFile string
	insecure bool
}

func newImagePullCmd() *cobra.Command {
	var f pullFlags
	c := &cobra.Command{
		Use:   "pull REF [NAME]",
		Short: "Pull an OCI image from a registry, an OCI layout or a docker archive",
		Long: `Pull the OCI image REF into the store as NAME. REF is, as skopeo names its
transports:

  [docker://][REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST]
      an image in a registry (without a registry Docker Hub's, without a tag or
      digest :latest); HTTPS with a verified certificate unless --insecure
  oci:DIR[:REF]
      an image in an OCI image layout directory (skopeo copy … oci:DIR:REF,
      umoci, berth image export --format oci); REF picks one of several
  docker-archive:FILE[:REPOSITORY:TAG]
      an image in a docker save (or podman save) archive

Only the layers the store lacks are downloaded and unpacked; a layer another
image has is stored once. NAME defaults to the last element of the image's
repository (docker.io/library/debian:bookworm is debian), or for a layout the
directory's name and for an archive the file's (or its REPOSITORY's), made a
valid name: lowercase letters, digits and '-'. When NAME exists it moves to
the new image; machines made from the old one keep it. When berthd runs, the
image goes into its store.`,
		Example: `  berth image pull docker.io/library/debian:bookworm
  berth image pull alpine@sha256:4bcff63911fcb4448bd4fdacec207030997caf25e9bea4045fa6c8c44de311d1 alpine-3
  berth image pull --platform linux/arm64 ghcr.io/example/app:1.4 app-arm
  berth image pull --insecure 127.0.0.1:5000/test/busybox:1
  berth image pull oci:/srv/oci/alpine:3.20
  berth image pull docker-archive:/tmp/app.tar:app:1.4`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, name, err := pullSource(args[0], f)
			if err != nil {
				return err
			}
			if len(args) == 2 {
				name = args[1]
				if err := rootfs.ValidName(name); err != nil {
					return fmt.Errorf("image pull %s: %w", args[0], err)
				}
			} else if name == "" {
				return fmt.Errorf("image pull %s: no image name can be made of it: give one after the reference (berth image pull REF NAME)", args[0])
			}
			return importImage(cmd, name, src, "")
		},
	}
	c.Flags().StringVar(&f.platform, "platform", "", "os/architecture[/variant] to take from a multi-platform image (default: the host's)")
	c.Flags().StringVar(&f.authFile, "auth-file", "", "credentials file (podman login's auth.json or a docker config.json), asked before the usual places")
	c.Flags().BoolVar(&f.insecure, "insecure", false, "allow a registry over plain HTTP or with a certificate that is not verified")
	return c
}

// pullSource is the source REF names, and the image name it defaults to.
func pullSource(ref string, f pullFlags) (rootfs.Source, string, error) {
	for _, tr := range []string{"oci:", "docker-archive:"} {
		rest, ok := strings.CutPrefix(ref, tr)
		if !ok {
			continue
		}
		if f.authFile != "" || f.insecure {
			return nil, "", fmt.Errorf("image pull %s: --auth-file and --insecure are for a registry, not a local %s", ref, strings.TrimSuffix(tr, ":"))
		}
		path, sub, _ := strings.Cut(rest, ":")
		if path == "" {
			return nil, "", fmt.Errorf("image pull %s: name the %s after %s", ref, map[string]string{"oci:": "layout directory", "docker-archive:": "archive"}[tr], tr)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, "", err
		}
		if tr == "oci:" {
			return rootfs.OCILayout{Path: abs, Ref: sub, Platform: f.platform}, defaultImageName(filepath.Base(abs)), nil
		}
		name := strings.TrimSuffix(filepath.Base(abs), ".tar")
		if sub != "" {
			name = repositoryName(sub)
		}
		return rootfs.DockerArchive{Path: abs, Ref: sub, Platform: f.platform}, defaultImageName(name), nil
	}
	ref = strings.TrimPrefix(ref, "docker://")
	if ref == "" {
		return nil, "", fmt.Errorf("image pull: give the image's reference, e.g. docker.io/library/debian:bookworm")
	}
	src := rootfs.Registry{Ref: ref, Platform: f.platform, Insecure: f.insecure}
	if f.authFile != "" {
		abs, err := filepath.Abs(f.authFile)
		if err != nil {
			return nil, "", err
		}
		src.AuthFile = abs
	}
	return src, defaultImageName(repositoryName(ref)), nil
}

// repositoryName is the last element of a reference's repository:
// debian of docker.io/library/debian:bookworm, app of
// registry.example.org:5000/team/app@sha256:….
func repositoryName(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	last := ref[strings.LastIndex(ref, "/")+1:]
	last, _, _ = strings.Cut(last, ":")
	return last
}

// defaultImageName makes s a valid image name, or "" when nothing is left
// of it (then NAME must be given).
func defaultImageName(s string) string {
	n := rundir.SanitizeName(s)
	if n == "machine" && !strings.Contains(strings.ToLower(s), "machine") {
		return ""
	}
	return n
}
