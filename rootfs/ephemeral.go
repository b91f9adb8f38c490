package rootfs

import (
	"fmt"
	"os"
	"time"

	"github.com/berthd/berth/rootfs/hold"
)

// StrategyEphemeral marks the Root of an ephemeral machine (EphemeralRoot):
// never stored, never a strategy a definition asks for.
const StrategyEphemeral Strategy = "ephemeral"

// EphemeralRoot is the root of an ephemeral machine: the image's layers as
// an overlay's lower dirs, with nothing made in the state directory. Its
// Overlay.Upper is seed, a directory (on the host, under the machine's
// runtime directory) with the files berth gives the machine on top of the
// image at each boot (resolv.conf); the machine's own writes go to a tmpfs its
// supervisor mounts (container.Overlay.Scratch).
func (s *Store) EphemeralRoot(machine, image, seed string) (*Root, error) {
	if err := ValidName(machine); err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	unlock, err := s.storeLock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	img, err := s.machineImage(machine, image)
	if err != nil {
		return nil, err
	}
	r := newRoot(machine, img, StrategyEphemeral)
	r.Overlay = &Overlay{Lower: img.Lowers(), Upper: seed}
	return &r, nil
}

// machineImage is the image a root of machine is made from. The caller holds
// the store lock, so that the image stays while the root is made.
func (s *Store) machineImage(machine, image string) (*Image, error) {
	ref, err := s.lookup(image)
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", machine, err)
	}
	img, err := s.imageOnly(*ref)
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", machine, err)
	}
	return img, nil
}

// newRoot is the record of a root of machine made from img by st: an
// overlay of an OCI image's layers records them, so the store keeps them.
func newRoot(machine string, img *Image, st Strategy) Root {
	r := Root{Machine: machine, Image: img.Name, Digest: img.Digest, Strategy: st, Created: time.Now().UTC()}
	if img.Name == "" {
		r.Image = img.Digest
	}
	if (st == StrategyOverlay || st == StrategyEphemeral) && img.Kind == ImageKindOCI {
		r.Layers = img.stack()
	}
	return r
}

// UseImage share-locks the content of image digest for a running ephemeral
// machine (hold.UseImage: a supervisor takes it without the store): the
// content is not removed (RemoveImage drops the name only, Prune keeps it)
// while the returned file is open. Such a machine has no root that records
// the image, and its overlay reads the image's tree for as long as it runs.
func (s *Store) UseImage(digest string) (*os.File, error) { return hold.UseImage(s.dir, digest) }

// imageInUse reports whether a running ephemeral machine holds digest's
// content (UseImage).
func (s *Store) imageInUse(digest string) bool { return hold.ImageInUse(s.dir, digest) }
