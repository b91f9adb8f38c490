package rootfs

import (
	"context"
	"io"
)

// The contract between the OCI image sources (registry, OCI layout, docker
// archive: oci_source.go) and the layer store (layers.go).
//
// An OCI image is a stack of layers, each a tar stream of changes with OCI
// whiteouts. The store keeps each layer once, unpacked, under its diff ID
// (STATE/images/layers/sha256/HEX), whatever image it came with; an image is
// the ordered list of its layers' diff IDs plus its config; a machine root
// made from it is an overlay with the layers as lower directories.

// Layered is a Source whose tree is a stack of layers. Import resolves it
// (the registry is asked once), unpacks the layers it does not have, and
// records the image.
type Layered interface {
	Source
	// Resolve finds the image for this host's platform (or the one the
	// source names) and describes it; nothing is downloaded but the
	// manifest and the config.
	Resolve(ctx context.Context) (*LayeredImage, error)
}

// LayeredImage is a resolved OCI image.
type LayeredImage struct {
	// Ref is what was asked for, as people write it
	// (docker.io/library/debian:bookworm, oci:/srv/layout:latest,
	// docker-archive:/tmp/x.tar).
	Ref string
	// Digest is the manifest's digest (sha256:HEX): the image's identity,
	// what `berth plan` shows and a definition may pin.
	Digest string
	// Platform is os/architecture[/variant] of the manifest taken.
	Platform string
	// Layers, lowest first, as in the manifest.
	Layers []Layer
	Config ImageConfig
}

// Layer is one layer of a LayeredImage.
type Layer struct {
	// DiffID is the sha256 of the uncompressed tar (sha256:HEX): the key
	// of the unpacked layer in the store. The unpacker checks the stream
	// against it and refuses a layer that does not match.
	DiffID string
	// Digest is the blob's digest as stored (compressed), for messages.
	Digest string
	// Size is the blob's size in bytes (compressed), for progress.
	Size int64
	// Open returns the uncompressed tar stream. Progress reports count the
	// compressed bytes read from the blob through count, when it is set.
	Open func(ctx context.Context, count func(n int64)) (io.ReadCloser, error)
}

// ImageConfig is the part of an OCI image config that becomes a machine's
// defaults (see the OCI image spec, config.config).
type ImageConfig struct {
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Cmd        []string          `json:"cmd,omitempty"`
	Env        []string          `json:"env,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	User       string            `json:"user,omitempty"`
	StopSignal string            `json:"stopSignal,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}
