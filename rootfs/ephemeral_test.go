package rootfs

import (
	"os"
	"testing"
)

// TestEphemeralRootAndImageInUse: an ephemeral machine's root is the image's
// tree under a seed directory, with nothing made under machines/; while a
// supervisor holds the image in use, removing the image drops its name but
// keeps its content, which prune removes once the machine has ended.
func TestEphemeralRootAndImageInUse(t *testing.T) {
	s := openStore(t)
	tree := t.TempDir()
	if err := os.MkdirAll(tree+"/etc", 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, tree+"/etc/os-release", []byte("ID=test\n"))
	img, err := s.Import(ctxT(t), "tiny", Dir{Path: tree}, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seed := t.TempDir()
	r, err := s.EphemeralRoot("eph", "tiny", seed)
	if err != nil {
		t.Fatal(err)
	}
	if r.Strategy != StrategyEphemeral || r.Digest != img.Digest || r.Overlay == nil || r.Overlay.Upper != seed ||
		len(r.Overlay.Lower) != 1 || r.Overlay.Lower[0] != img.Path {
		t.Fatalf("ephemeral root: %+v %+v", r, r.Overlay)
	}
	if HasRoot(s.dir, "eph") {
		t.Error("an ephemeral root was recorded under machines/")
	}
	if _, err := s.EphemeralRoot("eph", "nope", seed); err == nil {
		t.Error("an ephemeral root of an image that does not exist")
	}

	f, err := s.UseImage(img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveImage("tiny"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img.Path + "/etc/os-release"); err != nil {
		t.Fatalf("the content of an image in use was removed: %v", err)
	}
	f.Close()
	if _, err := s.Prune(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img.Path); !os.IsNotExist(err) {
		t.Errorf("the content of an unnamed image no machine uses is still there after prune: %v", err)
	}
}
