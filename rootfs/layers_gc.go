package rootfs

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Who uses a layer, and removing the ones nothing uses. A layer is used by
// every stored image record that lists it (named or not: a record stays while
// a machine root was made from it), by every overlay root whose lower dirs it
// is (root.json's layers), by every snapshot of one (snapshot.json's), and by every import in progress whose lease names
// it.

// describeLayers fills in an OCI image's fields from its record and its
// layers' own.
func (s *Store) describeLayers(img *Image, m *digestMeta) error {
	img.Kind, img.Ref, img.Platform, img.Config, img.Path = m.Kind, m.Ref, m.Platform, m.Config, ""
	for _, l := range m.Layers {
		lm, err := s.readLayer(l.DiffID)
		if err != nil {
			return err
		}
		img.Layers = append(img.Layers, ImageLayer{DiffID: l.DiffID, Digest: l.Digest, BlobSize: l.Size,
			Size: lm.Size, Files: lm.Files, OpaqueRoot: lm.OpaqueRoot, Path: s.layerTree(l.DiffID)})
	}
	return nil
}

// layerUsers maps each layer to the stored images (digests) that list it.
func (s *Store) layerUsers() (map[string]map[string]bool, error) {
	digests, err := s.digests()
	if err != nil {
		return nil, err
	}
	users := map[string]map[string]bool{}
	for _, d := range digests {
		m, err := s.readDigest(d)
		if err != nil {
			return nil, err
		}
		for _, l := range m.Layers {
			addUser(users, l.DiffID, d)
		}
	}
	return users, nil
}

// usersOf is layerUsers from images already read.
func usersOf(imgs []*Image) map[string]map[string]bool {
	users := map[string]map[string]bool{}
	for _, img := range imgs {
		for _, l := range img.Layers {
			addUser(users, l.DiffID, img.Digest)
		}
	}
	return users
}

func addUser(users map[string]map[string]bool, layer, digest string) {
	if users[layer] == nil {
		users[layer] = map[string]bool{}
	}
	users[layer][digest] = true
}

// markShared sets each layer's Shared and each image's Shared: the disk
// usage of its layers (each once) that another image lists too.
func markShared(imgs []*Image, users map[string]map[string]bool) {
	for _, img := range imgs {
		img.Shared = 0
		counted := map[string]bool{}
		for i := range img.Layers {
			l := &img.Layers[i]
			l.Shared = len(users[l.DiffID]) > 1
			if l.Shared && !counted[l.DiffID] {
				counted[l.DiffID] = true
				img.Shared += l.Size
			}
		}
	}
}

// usedLayers is every layer something uses. An image record that cannot be
// read fails it: its layers are unknown, so none may go.
func (s *Store) usedLayers() (map[string]bool, error) {
	used := map[string]bool{}
	users, err := s.layerUsers()
	if err != nil {
		return nil, err
	}
	for id := range users {
		used[id] = true
	}
	roots, err := s.Roots()
	if err != nil {
		return nil, err
	}
	for _, r := range roots {
		for _, id := range r.Layers {
			used[id] = true
		}
	}
	_, snapLayers, err := s.snapshotUsers()
	if err != nil {
		return nil, err
	}
	for id := range snapLayers {
		used[id] = true
	}
	leased, err := s.leasedLayers()
	if err != nil {
		return nil, err
	}
	for _, id := range leased {
		used[id] = true
	}
	return used, nil
}

// leasedLayers reads the leases of the imports in progress: work directories
// whose flock their process holds.
func (s *Store) leasedLayers() ([]string, error) {
	ents, err := os.ReadDir(s.tmpImages())
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	var out []string
	for _, e := range ents {
		p := filepath.Join(s.tmpImages(), e.Name())
		if _, err := os.Lstat(filepath.Join(p, leaseFile)); err != nil {
			continue
		}
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_DIRECTORY, 0)
		if err != nil {
			continue
		}
		alive := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == unix.EWOULDBLOCK
		f.Close()
		if !alive {
			continue // the import died; its work directory goes at the next Open
		}
		var ids []string
		if err := readJSON(filepath.Join(p, leaseFile), &ids); err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		out = append(out, ids...)
	}
	return out, nil
}

// gcLayers removes the layers nothing uses and returns their diff IDs and the
// bytes freed. The caller holds the store lock exclusively.
func (s *Store) gcLayers() (removed []string, freed int64, err error) {
	ents, err := os.ReadDir(s.layersDir())
	if os.IsNotExist(err) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("layer store: %w", err)
	}
	used, err := s.usedLayers()
	if err != nil {
		return nil, 0, fmt.Errorf("layer store: %w", err)
	}
	for _, e := range ents {
		id := "sha256:" + e.Name()
		if !validDigest(id) || used[id] {
			continue
		}
		var size int64
		if m, err := s.readLayer(id); err == nil {
			size = m.Size
		}
		if err := s.discardDir(s.layerDir(id), "remove-layer-"); err != nil {
			return removed, freed, fmt.Errorf("layer %s: %w", id, err)
		}
		slog.Info("rootfs: removed unused layer", "layer", id, "size", size)
		removed = append(removed, id)
		freed += size
	}
	return removed, freed, nil
}
