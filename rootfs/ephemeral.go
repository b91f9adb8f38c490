package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
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

// inUseFile, in an image's content directory, is share-locked by the
// supervisor of every running ephemeral machine made from it: such a machine
// has no root that records the image, and its overlay reads the image's
// tree for as long as it runs.
const inUseFile = "in-use.lock"

// UseImage share-locks the content of image digest for a running ephemeral
// machine: the content is not removed (RemoveImage drops the name only,
// Prune keeps it) while the returned file is open. The kernel drops the lock
// when the process holding it ends, however it ends.
func (s *Store) UseImage(digest string) (*os.File, error) {
	if !validDigest(digest) {
		return nil, errorf(ErrInvalid, "image digest %q", digest)
	}
	f, err := os.OpenFile(filepath.Join(s.digestDir(digest), inUseFile), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image %s: mark in use: %w", digest, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
		f.Close()
		return nil, fmt.Errorf("image %s: mark in use: %w", digest, err)
	}
	return f, nil
}

// imageInUse reports whether a running ephemeral machine holds digest's
// content (UseImage).
func (s *Store) imageInUse(digest string) bool {
	f, err := os.OpenFile(filepath.Join(s.digestDir(digest), inUseFile), os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	return errors.Is(err, unix.EWOULDBLOCK)
}
