package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/userns"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
)

// machineRoot is the root a machine starts on: its persistent root, made
// from its image the first time; or, for an ephemeral machine, its image's
// layers under a fresh seed directory, with nothing made in the state
// directory (a persistent root of the same name is left alone: it is data).
func (h *Host) machineRoot(ctx context.Context, m *spec.Machine) (*rootfs.Root, error) {
	if m.Root.Ephemeral {
		seed := rundir.For(h.paths.RuntimeDir, m.Name).Seed()
		if err := os.RemoveAll(seed); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(seed, 0o755); err != nil {
			return nil, err
		}
		return h.images.EphemeralRoot(m.Name, m.Image, seed)
	}
	root, err := h.images.Root(m.Name)
	if errors.Is(err, rootfs.ErrNotFound) {
		root, err = h.images.CreateRoot(ctx, m.Name, m.Image, rootfs.Strategy(m.Root.Strategy))
	}
	return root, err
}

// ephemeralConfig puts an ephemeral machine's writes on a tmpfs of its
// root.ephemeralSize, with the seed copied onto it at each boot.
func ephemeralConfig(cfg *container.Config, m *spec.Machine) {
	o := cfg.Root.Overlay
	cfg.Root.Overlay = &container.Overlay{Lower: o.Lower, Seed: o.Upper, Scratch: m.Root.EphemeralSize.Bytes()}
}

// ephemeralUsers gives an ephemeral machine with private users a range of
// host IDs, recorded for as long as the machine runs (forgetEphemeral
// releases it): its image is idmapped into the range, never shifted (that
// would change an image other machines use), so a filesystem that cannot
// idmap refuses the machine.
func (h *Host) ephemeralUsers(m *spec.Machine) (*container.Users, error) {
	if !m.PrivateUsers.Private() {
		return nil, nil
	}
	img, err := h.images.Image(m.Image)
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", m.Name, err)
	}
	for _, l := range img.Lowers() {
		if err := userns.Probe(l); err != nil {
			return nil, fmt.Errorf("machine %q: an ephemeral machine's image is idmapped, never shifted, and image %q cannot be: %w; set privateUsers: false or keep the image on a filesystem that can be idmapped", m.Name, m.Image, err)
		}
	}
	base, pinned := m.PrivateUsers.Pinned()
	r, err := h.users.Assign(m.Name, base, pinned)
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", m.Name, err)
	}
	return &container.Users{Base: r.Base, Size: userns.Size}, nil
}

// forgetEphemeral releases the UID range of an ephemeral machine that has
// ended, as berth boot forgets a one-off boot's: nothing on disk is owned by
// it. A machine with a persistent root of the same name keeps its range.
func (h *Host) forgetEphemeral(name string) {
	w, err := readRecord(rundir.For(h.paths.RuntimeDir, name))
	if err != nil || w.Spec == nil || !w.Spec.Root.Ephemeral {
		return
	}
	_ = os.RemoveAll(rundir.For(h.paths.RuntimeDir, name).Seed())
	if rootfs.HasRoot(h.paths.StateDir, name) {
		return
	}
	if err := h.users.Release(name); err != nil {
		slog.Warn("cannot release an ephemeral machine's UID range", "machine", name, "err", err)
	}
}
