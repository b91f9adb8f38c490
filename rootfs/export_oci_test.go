package rootfs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
)

// TestExportOCI writes the three-layer image (whiteouts, an opaque
// directory, hard links, a setuid file, an xattr) as an OCI layout, reads it
// back through the OCILayout source, and checks the round trip: the layers
// as written (OCI whiteouts again, no overlayfs markers), the same merged
// tree, and an export of the import that is the same bytes — same diff IDs,
// blobs and manifest digest.
func TestExportOCI(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	if _, err := s.Import(ctx, "stack", newStack("test.example/stack:1", baseLayer(t), changeLayer(t), topLayer(t)), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	out, err := s.ExportOCI(ctx, "stack", dir, OCIExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if out.RefName != "stack" || len(out.Layers) != 3 || out.Platform != "linux/amd64" || !validDigest(out.Digest) {
		t.Fatalf("export = %+v", out)
	}
	names := layerEntries(t, dir, out.Layers[1])
	for _, want := range []string{"./etc/.wh.gone", "./etc/opq/", "./etc/opq/.wh..wh..opq", "./var/.wh.gonedir", "./.wh.nothing-there", "./etc/opq/new"} {
		if !slices.Contains(names, want) {
			t.Errorf("the change layer's entries %q lack %s", names, want)
		}
	}
	if i := slices.Index(names, "./etc/opq/"); i < 0 || i+1 >= len(names) || names[i+1] != "./etc/opq/.wh..wh..opq" {
		t.Errorf("the opaque marker does not follow its directory: %q", names)
	}

	again, err := s.Import(ctx, "again", OCILayout{Path: dir, Ref: "stack"}, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != out.Digest || !slices.Equal(again.layerIDs(), exportedIDs(out)) || !slices.Equal(again.Config.Cmd, []string{"/bin/sh"}) {
		t.Errorf("imported %s %q %+v, want %s %q", again.Digest, again.layerIDs(), again.Config, out.Digest, exportedIDs(out))
	}
	checkConverted(t, again.Layers[1].Path)
	orig, _ := s.CreateRoot(ctx, "orig", "stack", StrategyCopy)
	copied, err := s.CreateRoot(ctx, "copied", "again", StrategyCopy)
	if err != nil {
		t.Fatal(err)
	}
	checkMerged(t, copied.Dir)
	if a, b := listDir(t, orig.Dir), listDir(t, copied.Dir); a != b {
		t.Errorf("the root of the exported image differs:\n%s", testenv.Diff(a, b))
	}

	// The export of the import is the same image, in the same layout beside it.
	out2, err := s.ExportOCI(ctx, "again", dir, OCIExportOptions{RefName: "again"})
	if err != nil {
		t.Fatal(err)
	}
	if out2.Digest != out.Digest || !slices.Equal(exportedIDs(out2), exportedIDs(out)) {
		t.Errorf("export of the import: %s %q, want %s %q", out2.Digest, exportedIDs(out2), out.Digest, exportedIDs(out))
	}
	if refs := layoutRefs(t, dir); !slices.Equal(refs, []string{"stack", "again"}) {
		t.Errorf("index.json names %q", refs)
	}
	if _, err := s.ExportOCI(ctx, "again", dir, OCIExportOptions{RefName: "again"}); err != nil || !slices.Equal(layoutRefs(t, dir), []string{"stack", "again"}) {
		t.Errorf("a second export under a ref replaces it: %q, %v", layoutRefs(t, dir), err)
	}
	if left := storeLeftovers(t, s); len(left) != 0 {
		t.Errorf("work directories left: %v", left)
	}
}

// TestExportOCIRefused: a directory that holds something else, a ref name
// the image spec does not allow.
func TestExportOCIRefused(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	if _, err := s.Import(ctx, "one", newStack("test.example/one:1", makeTar(t, file("a", "a"))), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	busy := t.TempDir()
	writeFile(t, filepath.Join(busy, "notes.txt"), []byte("mine"))
	_, err := s.ExportOCI(ctx, "one", busy, OCIExportOptions{})
	if !errors.Is(err, ErrExists) {
		t.Errorf("export into a directory of other files: %v, want ErrExists", err)
	}
	wantErr(t, err, "neither empty nor an OCI image layout")
	_, err = s.ExportOCI(ctx, "one", t.TempDir(), OCIExportOptions{RefName: "a b"})
	wantErr(t, err, `ref name "a b"`)
	_, err = s.ExportOCI(ctx, "missing", t.TempDir(), OCIExportOptions{})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("export of a missing image: %v", err)
	}
}

// TestExportTreeAsOCI: a tree image is one layer of the whole tree; the OCI
// image imported from it flattens back (berth image export's tar) to the
// tree's own digest.
func TestExportTreeAsOCI(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	tree := t.TempDir()
	if err := extractTar(ctx, bytes.NewReader(baseLayer(t)), tree); err != nil {
		t.Fatal(err)
	}
	img, err := s.Import(ctx, "tree", Dir{Path: tree}, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	out, err := s.ExportOCI(ctx, "tree", dir, OCIExportOptions{RefName: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Layers) != 1 || out.Platform != hostPlat {
		t.Fatalf("export = %+v", out)
	}
	if _, err := s.Import(ctx, "layered", OCILayout{Path: dir}, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	var flat bytes.Buffer
	if err := s.Export(ctx, "layered", &flat, CompressNone); err != nil {
		t.Fatal(err)
	}
	arch := writeFile(t, filepath.Join(t.TempDir(), "flat.tar"), flat.Bytes())
	back, err := s.Import(ctx, "back", Tar{Location: arch}, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if back.Digest != img.Digest {
		t.Errorf("tree → OCI layout → OCI image → tar → tree: %s, want the tree's %s", back.Digest, img.Digest)
	}
	if left := storeLeftovers(t, s); len(left) != 0 {
		t.Errorf("work directories left: %v", left)
	}
}

// TestExportFlattened: the tar export of an OCI image is its layers merged.
func TestExportFlattened(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	ctx := ctxT(t)
	s := openStore(t)
	if _, err := s.Import(ctx, "stack", newStack("test.example/stack:1", baseLayer(t), changeLayer(t), topLayer(t)), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	var flat bytes.Buffer
	var phases []string
	pctx := WithProgress(ctx, func(p Progress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	})
	if err := s.Export(pctx, "stack", &flat, CompressGzip); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(phases, []string{"flatten", "export"}) {
		t.Errorf("phases %q", phases)
	}
	arch := writeFile(t, filepath.Join(t.TempDir(), "flat.tar.gz"), flat.Bytes())
	img, err := s.Import(ctx, "flat", Tar{Location: arch}, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkMerged(t, img.Path)
	if left := storeLeftovers(t, s); len(left) != 0 {
		t.Errorf("work directories left: %v", left)
	}
}

// TestExportOCITools: skopeo inspects the layout berth wrote, and umoci
// unpacks it to the merged tree.
func TestExportOCITools(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	needTool(t, "skopeo")
	needTool(t, "umoci")
	ctx := ctxT(t)
	s := openStore(t)
	if _, err := s.Import(ctx, "stack", newStack("test.example/stack:1", baseLayer(t), changeLayer(t), topLayer(t)), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "layout")
	out, err := s.ExportOCI(ctx, "stack", dir, OCIExportOptions{RefName: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := exec.Command("skopeo", "inspect", "oci:"+dir+":v1").CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, b)
	}
	var info struct {
		Digest       string
		Layers       []string
		Architecture string
		Os           string
	}
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, b)
	}
	var want []string
	for _, l := range out.Layers {
		want = append(want, l.Digest)
	}
	if info.Digest != out.Digest || !slices.Equal(info.Layers, want) || info.Os != "linux" || info.Architecture != "amd64" {
		t.Errorf("skopeo inspect: %s", b)
	}
	bundle := filepath.Join(tmp, "bundle")
	if b, err := exec.Command("umoci", "unpack", "--image", dir+":v1", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, b)
	}
	checkMerged(t, filepath.Join(bundle, "rootfs"))
}

// layerEntries lists the entries of an exported layer's blob, checking that
// it is gzip of a tar whose sha256 is the diff ID, and holds no overlayfs
// whiteout or xattr.
func layerEntries(t *testing.T, dir string, l ExportedLayer) []string {
	t.Helper()
	blob, err := os.ReadFile(blobPath(dir, l.Digest))
	if err != nil || sha256Of(blob) != l.Digest || int64(len(blob)) != l.Size {
		t.Fatalf("blob %s: %d bytes, %v", l.Digest, len(blob), err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil || sha256Of(raw) != l.DiffID {
		t.Fatalf("layer %s: its tar hashes to %s, not its diff ID %s (%v)", l.Digest, sha256Of(raw), l.DiffID, err)
	}
	var names []string
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Typeflag == tar.TypeChar {
			t.Errorf("%s: a character device in the layer (an overlayfs whiteout left?)", hdr.Name)
		}
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.trusted.overlay.") {
				t.Errorf("%s carries %s", hdr.Name, k)
			}
		}
	}
	return names
}

func exportedIDs(out *OCIExport) []string {
	var ids []string
	for _, l := range out.Layers {
		ids = append(ids, l.DiffID)
	}
	return ids
}

// layoutRefs lists the ref names of a layout's index.json in order.
func layoutRefs(t *testing.T, dir string) []string {
	t.Helper()
	var idx struct {
		Manifests []struct {
			Annotations map[string]string
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil || json.Unmarshal(b, &idx) != nil {
		t.Fatalf("index.json: %v %s", err, b)
	}
	var refs []string
	for _, m := range idx.Manifests {
		refs = append(refs, m.Annotations["org.opencontainers.image.ref.name"])
	}
	return refs
}
