package rootfs

import (
	"fmt"
	"time"
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
	ref, err := s.lookup(image)
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", machine, err)
	}
	img, err := s.imageOnly(*ref)
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", machine, err)
	}
	r := &Root{Machine: machine, Image: img.Name, Digest: img.Digest, Strategy: StrategyEphemeral, Created: time.Now().UTC(),
		Overlay: &Overlay{Lower: img.Lowers(), Upper: seed}}
	if img.Name == "" {
		r.Image = img.Digest
	}
	if img.Kind == ImageKindOCI {
		r.Layers = img.stack()
	}
	return r, nil
}
