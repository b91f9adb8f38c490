package host

import (
	"context"
	"fmt"
	"time"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/internal/logctx"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/events"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
)

func (h *Host) BuildImage(ctx context.Context, img *spec.Image) error {
	if img == nil {
		return fmt.Errorf("image: %w", errdefs.ErrNotFound)
	}
	src, err := ImageSource(img)
	if err != nil {
		return err
	}
	_, err = h.images.Import(ctx, img.Name, src, rootfs.ImportOptions{SpecHash: img.Hash(), Progress: progressReporter(ctx, img.Name, h.events)})
	if err != nil && img.Source.File != "" {
		// Located at the definition, as a validation error is: a platform
		// the index lacks, a tag the layout lacks, a bad archive.
		return fmt.Errorf("%s:%d: %w", img.Source.File, img.Source.Line, err)
	}
	return err
}

// ImageSource maps an Image definition to the image store's source.
func ImageSource(img *spec.Image) (rootfs.Source, error) {
	switch {
	case img.Directory != "":
		return rootfs.Dir{Path: img.Directory}, nil
	case img.Tar != nil:
		loc := img.Tar.Path
		if loc == "" {
			loc = img.Tar.URL
		}
		return rootfs.Tar{Location: loc, SHA256: img.Tar.SHA256}, nil
	case img.Debootstrap != nil:
		db := img.Debootstrap
		return rootfs.Debootstrap{Suite: db.Suite, Mirror: db.Mirror, Variant: db.Variant, Packages: db.Packages}, nil
	case img.Registry != nil:
		r := img.Registry
		return rootfs.Registry{Ref: r.Ref, Platform: r.Platform, AuthFile: r.AuthFile, Insecure: r.Insecure}, nil
	case img.OCILayout != nil:
		o := img.OCILayout
		return rootfs.OCILayout{Path: o.Path, Ref: o.Ref, Platform: o.Platform}, nil
	case img.DockerArchive != nil:
		a := img.DockerArchive
		return rootfs.DockerArchive{Path: a.Path, Ref: a.Ref, Platform: a.Platform}, nil
	}
	return nil, fmt.Errorf("image %q: no source", img.Name)
}

// progressReporter reports long image work in the daemon's log and as
// image.progress events (which `berth apply` shows while it waits), at most
// every few seconds and at each new phase.
func progressReporter(ctx context.Context, image string, events *events.Log) rootfs.ProgressFunc {
	var last time.Time
	phase := ""
	return func(p rootfs.Progress) {
		if p.Phase == phase && time.Since(last) < 3*time.Second {
			return
		}
		last, phase = time.Now(), p.Phase
		attrs := []any{"image", image, "phase", p.Phase}
		msg := "image " + image + ": " + p.Phase
		if p.Total > 0 {
			pct := p.Done * 100 / p.Total
			attrs = append(attrs, "done", fmt.Sprintf("%d%%", pct))
			msg += fmt.Sprintf(" %d%%", pct)
		}
		if p.Message != "" {
			attrs = append(attrs, "msg", p.Message)
			msg += ": " + p.Message
		}
		logctx.From(ctx).Info("building image", attrs...)
		if events != nil {
			events.Emit(api.Event{Kind: api.EvImageProgress, Image: image, Message: msg})
		}
	}
}
