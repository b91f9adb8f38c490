package rootfs

import (
	"bytes"
	"io"
	"sync"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestLayersFromRegistry pulls two images that share a base from the
// in-process registry into the store, the real source's way: the base is
// downloaded and stored once, each layer's progress counts its blob's bytes,
// and a root of the second image shows its layers merged.
func TestLayersFromRegistry(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	reg := newTestRegistry(t)
	layer := func(b []byte, comp compression.Compression) v1.Layer {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
			tarball.WithCompression(comp), tarball.WithMediaType(map[compression.Compression]types.MediaType{
				compression.GZip: types.OCILayer, compression.ZStd: types.OCILayerZStd}[comp]))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	base := layer(baseLayer(t), compression.GZip)
	refA, _ := reg.push(t, "stack/a:1", testImage(t, hostPlat, base, layer(makeTar(t, file("etc/a", "a")), compression.ZStd)))
	refB, digestB := reg.push(t, "stack/b:1", testImage(t, hostPlat, base, layer(changeLayer(t), compression.GZip), layer(topLayer(t), compression.ZStd)))
	s := openStore(t)
	if _, err := s.Import(ctx, "a", Registry{Ref: refA, Insecure: true}, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	last := map[string]Progress{}
	img, err := s.Import(ctx, "b", Registry{Ref: refB, Insecure: true}, ImportOptions{Progress: func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		last[p.Phase] = p
	}})
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != digestB.String() || img.Ref != refB || len(img.Layers) != 3 || !img.Layers[0].Shared || img.Shared != img.Layers[0].Size {
		t.Errorf("image b = %+v", img)
	}
	for _, l := range img.Layers {
		p := last[LayerPhase(Layer{Digest: l.Digest})]
		if p.Total != l.BlobSize || p.Done != l.BlobSize {
			t.Errorf("last progress of layer %s: %+v, want done = total = %d", l.Digest, p, l.BlobSize)
		}
	}
	if got := storedLayers(t, s); len(got) != 4 {
		t.Errorf("layers stored: %v, want 4 (the base once)", got)
	}
	r, err := s.CreateRoot(ctx, "m", "b", StrategyAuto)
	if err != nil {
		t.Fatal(err)
	}
	view := t.TempDir()
	inOverlay(t, r, `cp -a "$R/." "`+view+`/"`)
	checkMerged(t, view)
}
