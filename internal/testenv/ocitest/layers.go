package ocitest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// TreeLayer writes the entries of the tree at root that keep accepts (by
// their path relative to root, "usr/bin/ls"; nil keeps all) as a layer blob
// to file, compressed with comp (gzip or zstd), and returns the layer. The
// tar is streamed from the tree, never held in memory: numeric owners,
// modes, nanosecond times, xattrs, device nodes and hard links (within the
// layer) are kept, as docker build writes them. A directory keep refuses is
// skipped whole.
func TreeLayer(file, root string, keep func(rel string) bool, comp compression.Compression) (v1.Layer, error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	cw, err := compressor(bw, comp)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(cw)
	if err := writeTree(tw, root, keep); err != nil {
		return nil, fmt.Errorf("layer of %s: %w", root, err)
	}
	for _, c := range []io.Closer{tw, cw} {
		if err := c.Close(); err != nil {
			return nil, err
		}
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return FileLayer(file, comp)
}

// FileLayer is the layer whose blob is the compressed tar in file.
func FileLayer(file string, comp compression.Compression) (v1.Layer, error) {
	return tarball.LayerFromFile(file, tarball.WithCompression(comp), tarball.WithMediaType(mediaType(comp)))
}

func mediaType(comp compression.Compression) types.MediaType {
	if comp == compression.ZStd {
		return types.OCILayerZStd
	}
	return types.OCILayer
}

func compressor(w io.Writer, comp compression.Compression) (io.WriteCloser, error) {
	switch comp {
	case compression.GZip:
		return gzip.NewWriterLevel(w, gzip.BestSpeed)
	case compression.ZStd:
		return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(runtime.NumCPU()))
	}
	return nil, fmt.Errorf("compression %s: gzip or zstd", comp)
}

// writeTree writes the kept entries of root, in lexical order.
func writeTree(tw *tar.Writer, root string, keep func(string) bool) error {
	links := map[[2]uint64]string{} // (dev, inode) → the first name written
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case rel == ".":
			return nil
		case keep != nil && !keep(rel) && d.IsDir():
			return filepath.SkipDir
		case keep != nil && !keep(rel):
			return nil
		}
		hdr, err := header(p, rel, links)
		if err != nil || hdr == nil {
			return err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
}

// header is the tar header of the file at p (nil for a socket, which a tar
// cannot hold).
func header(p, rel string, links map[[2]uint64]string) (*tar.Header, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	hdr := &tar.Header{Name: rel, Mode: int64(st.Mode & 0o7777), Uid: int(st.Uid), Gid: int(st.Gid),
		ModTime: time.Unix(st.Mtim.Unix()), Format: tar.FormatPAX}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		return hdr, nil // xattrs of links are not kept
	case unix.S_IFREG:
		id := [2]uint64{st.Dev, st.Ino}
		if first, ok := links[id]; ok && st.Nlink > 1 {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			return hdr, nil
		}
		links[id] = rel
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = map[uint32]byte{unix.S_IFCHR: tar.TypeChar, unix.S_IFBLK: tar.TypeBlock}[st.Mode&unix.S_IFMT]
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil, nil
	}
	xattrs, err := readXattrs(p)
	if err != nil {
		return nil, err
	}
	for k, v := range xattrs {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+k] = v
	}
	return hdr, nil
}

func readXattrs(p string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if err == unix.ENOTSUP {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(p, buf); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, k := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		vsz, err := unix.Lgetxattr(p, k, nil)
		if err != nil {
			return nil, &os.PathError{Op: "getxattr " + k, Path: p, Err: err}
		}
		v := make([]byte, vsz)
		if vsz, err = unix.Lgetxattr(p, k, v); err != nil {
			return nil, &os.PathError{Op: "getxattr " + k, Path: p, Err: err}
		}
		out[k] = string(v[:vsz])
	}
	return out, nil
}

// Entry is one member of a small layer made in memory (Layer).
type Entry struct {
	Name     string // a directory's ends in /
	Body     string // a file's content
	UID, GID int    // owner (default root)
	Mode     int64  // permission bits; 0: 0644 for a file, 0755 for a directory
}

// Dir, File, Whiteout and Opaque are a layer's entries: a directory, a
// file, the OCI whiteout that deletes dir/name from the layers below, and
// the marker that hides what the layers below have in dir.
func Dir(name string) Entry        { return Entry{Name: strings.TrimSuffix(name, "/") + "/"} }
func File(name, body string) Entry { return Entry{Name: name, Body: body} }
func Whiteout(dir, name string) Entry {
	return Entry{Name: filepath.Join(dir, ".wh."+name)}
}
func Opaque(dir string) Entry { return Entry{Name: filepath.Join(dir, ".wh..wh..opq")} }

// Layer is a layer of ents, owned by root, compressed with comp.
func Layer(comp compression.Compression, ents ...Entry) (v1.Layer, error) {
	var raw bytes.Buffer
	cw, err := compressor(&raw, comp)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(cw)
	mtime := time.Unix(1700000000, 0)
	for _, e := range ents {
		hdr := &tar.Header{Name: e.Name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(e.Body)), ModTime: mtime, Uid: e.UID, Gid: e.GID}
		if strings.HasSuffix(e.Name, "/") {
			hdr.Mode, hdr.Typeflag, hdr.Size = 0o755, tar.TypeDir, 0
		}
		if e.Mode != 0 {
			hdr.Mode = e.Mode
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, e.Body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := cw.Close(); err != nil {
		return nil, err
	}
	b := raw.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithCompression(comp), tarball.WithMediaType(mediaType(comp)))
}

// Image is an OCI image for linux on this machine's architecture of layers
// (lowest first) with cfg as its config.
func Image(cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH, Config: cfg,
		RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(img, layers...)
}

// SplitTree writes the tree at root as two layer blobs in dir: its /usr,
// and everything else (/etc, /var, the top-level links into /usr …), the way
// a distribution's base image often splits.
func SplitTree(dir, root string, comp compression.Compression) (usr, rest v1.Layer, err error) {
	inUsr := func(rel string) bool { return rel == "usr" || strings.HasPrefix(rel, "usr/") }
	ext := map[compression.Compression]string{compression.GZip: ".tar.gz", compression.ZStd: ".tar.zst"}[comp]
	if usr, err = TreeLayer(filepath.Join(dir, "usr"+ext), root, inUsr, comp); err != nil {
		return nil, nil, err
	}
	rest, err = TreeLayer(filepath.Join(dir, "rest"+ext), root, func(rel string) bool { return !inUsr(rel) }, comp)
	return usr, rest, err
}
