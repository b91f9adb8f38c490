package rootfs

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// CompressionFor tells the compression a file name asks for: .tar, .tar.gz or
// .tgz, .tar.xz, .tar.zst (or .tzst).
func CompressionFor(name string) (Compression, error) {
	switch {
	case strings.HasSuffix(name, ".tar"):
		return CompressNone, nil
	case strings.HasSuffix(name, ".tar.gz"), strings.HasSuffix(name, ".tgz"):
		return CompressGzip, nil
	case strings.HasSuffix(name, ".tar.xz"), strings.HasSuffix(name, ".txz"):
		return CompressXz, nil
	case strings.HasSuffix(name, ".tar.zst"), strings.HasSuffix(name, ".tzst"):
		return CompressZstd, nil
	}
	return "", errorf(ErrInvalid, "%s: name the file .tar, .tar.gz, .tar.xz or .tar.zst to choose the compression", name)
}

// Export writes the image as a tar archive, compressed as asked, that Import
// turns back into the same digest: entries in the digest's order, numeric
// owners, PAX records for nanosecond mtimes and xattrs, hard links as links.
// An OCI image is written as one tree: its layers flattened, lowest first, as
// a copy root of it is (in a work directory of the store, removed after).
func (s *Store) Export(ctx context.Context, name string, w io.Writer, c Compression) error {
	img, err := s.Image(name)
	if err != nil {
		return err
	}
	rep := newReporter(progressFrom(ctx))
	tree := img.Path
	if img.Kind == ImageKindOCI {
		wd, err := s.leaseExport(img)
		if err != nil {
			return fmt.Errorf("export image %q: %w", name, err)
		}
		defer wd.discard()
		if tree, err = flattenForExport(ctx, img, wd, rep); err != nil {
			return fmt.Errorf("export image %q: flatten its layers: %w", name, err)
		}
	}
	zw, err := compressWriter(w, c)
	if err != nil {
		return err
	}
	x := newExporter(zw, rep, false)
	x.rep.start("export", img.Size)
	if err := walkTree(ctx, tree, x.entry, nil); err != nil {
		return fmt.Errorf("export image %q: %w", name, err)
	}
	if err := x.tw.Close(); err != nil {
		return fmt.Errorf("export image %q: %w", name, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("export image %q: %w", name, err)
	}
	x.rep.finish(x.done)
	return nil
}

// leaseExport makes the work directory of an export of the OCI image img,
// holding a lease on its layers so that a prune meanwhile keeps them (as an
// import's does).
func (s *Store) leaseExport(img *Image) (*workDir, error) {
	wd, err := newWorkDir(s.tmpImages(), "export-"+img.Name+"-")
	if err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(wd.path, leaseFile), img.layerIDs()); err != nil {
		wd.discard()
		return nil, err
	}
	for _, l := range img.Layers {
		if _, err := os.Stat(l.Path); err != nil {
			wd.discard()
			return nil, fmt.Errorf("layer %s: %w", l.DiffID, err)
		}
	}
	return wd, nil
}

// flattenForExport applies the layers of img to a tree in wd and returns it.
// File data is cloned where the filesystem can (reflink), else copied.
func flattenForExport(ctx context.Context, img *Image, wd *workDir, rep *reporter) (string, error) {
	tree := filepath.Join(wd.path, "rootfs")
	if err := makeTreeDir(tree); err != nil {
		return "", err
	}
	lowest := slices.Clone(img.Lowers())
	slices.Reverse(lowest)
	rep.start("flatten", img.Size)
	n, err := flattenLayers(ctx, lowest, tree, copyOptions{reflink: true, progress: rep.update})
	rep.finish(n)
	return tree, err
}

// compressWriter wraps w in the compressor c names. Closing it flushes the
// compressor but leaves w open (it is the caller's).
func compressWriter(w io.Writer, c Compression) (io.WriteCloser, error) {
	switch c {
	case CompressNone, "":
		return nopWriteCloser{w}, nil
	case CompressGzip:
		return gzip.NewWriter(w), nil
	case CompressZstd:
		z, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(2))
		if err != nil {
			return nil, err
		}
		return z, nil
	case CompressXz:
		z, err := xz.NewWriter(w)
		if err != nil {
			return nil, err
		}
		return z, nil
	default:
		return nil, errorf(ErrInvalid, "export compression %q: use none, gzip, xz or zstd", c)
	}
}

// exporter writes one image tree to a tar stream, one walked node at a time.
type exporter struct {
	rep   *reporter
	tw    *tar.Writer
	first map[inode]string // the first name of each hard-linked inode
	buf   []byte           // for copying file contents
	done  int64            // bytes of file contents written
	// layer: the tree is an unpacked OCI layer of the store, whose
	// overlayfs whiteouts and opaque directories go back to the OCI
	// markers (export_oci.go).
	layer bool
	// shift is subtracted from owners at or above it: a shifted machine
	// root's range base, so the archive holds the machine's own IDs.
	shift uint32
}

func newExporter(w io.Writer, rep *reporter, layer bool) *exporter {
	return &exporter{rep: rep, tw: tar.NewWriter(w), first: map[inode]string{}, buf: make([]byte, 1<<20), layer: layer}
}

// entry writes node n: a hard link to the first name of an inode already
// written, or a header of its type with its xattrs and, for a file, its
// contents.
func (x *exporter) entry(n *node) error {
	if x.layer && n.rel != "" && isWhiteout(&n.st) {
		return x.whiteout(n)
	}
	hdr := &tar.Header{
		Name:    "./" + n.rel,
		Mode:    int64(n.st.Mode & 07777),
		Uid:     int(unshift(n.st.Uid, x.shift)),
		Gid:     int(unshift(n.st.Gid, x.shift)),
		ModTime: time.Unix(n.st.Mtim.Sec, n.st.Mtim.Nsec),
		Format:  tar.FormatPAX,
	}
	if n.st.Nlink > 1 && !n.isDir() {
		k := inode{n.st.Dev, n.st.Ino}
		if f, ok := x.first[k]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, "./"+f
			return x.tw.WriteHeader(hdr)
		}
		x.first[k] = n.rel
	}
	if err := setEntryType(hdr, n); err != nil {
		return err
	}
	xs, err := n.xattrs()
	if err != nil {
		return err
	}
	for _, a := range xs {
		if x.layer && strings.HasPrefix(a.name, "trusted.overlay.") {
			continue // overlayfs's own: the opaque marker, below
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+a.name] = string(a.value)
	}
	if err := x.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", n.rel, err)
	}
	if x.layer && n.isDir() && isOpaque(n.fd) {
		return x.opaque(n)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	return x.contents(n, hdr.Size)
}

// unshift is id as the machine sees it when its root's owners were shifted
// by base.
func unshift(id, base uint32) uint32 {
	if base > 0 && id >= base {
		return id - base
	}
	return id
}

// setEntryType fills in what hdr needs for n's file type: a directory's
// trailing slash (not the root's, which stays "./"), a file's size, a symlink's
// target, a device's numbers.
func setEntryType(hdr *tar.Header, n *node) error {
	switch n.st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		if n.rel != "" {
			hdr.Name += "/"
		}
	case unix.S_IFREG:
		hdr.Typeflag, hdr.Size = tar.TypeReg, n.st.Size
	case unix.S_IFLNK:
		t, err := n.readlink()
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, t
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if n.st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(n.st.Rdev)), int64(unix.Minor(n.st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	}
	return nil
}

// contents copies the size bytes of file n that its header announced. A file
// shorter now than its header says would leave the archive short, so it fails
// the export.
func (x *exporter) contents(n *node, size int64) error {
	f, err := n.open()
	if err != nil {
		return err
	}
	defer f.Close()
	k, err := io.CopyBuffer(x.tw, io.LimitReader(f, size), x.buf)
	if err != nil {
		return fmt.Errorf("%s: %w", n.rel, err)
	}
	if k != size {
		return fmt.Errorf("%s: changed while exported (image trees must not change)", n.rel)
	}
	x.done += k
	x.rep.update(x.done)
	return nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
