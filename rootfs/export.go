package rootfs

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
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
func (s *Store) Export(ctx context.Context, name string, w io.Writer, c Compression) error {
	img, err := s.Image(name)
	if err != nil {
		return err
	}
	var zw io.WriteCloser
	switch c {
	case CompressNone, "":
		zw = nopWriteCloser{w}
	case CompressGzip:
		zw = gzip.NewWriter(w)
	case CompressZstd:
		z, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(2))
		if err != nil {
			return err
		}
		zw = z
	case CompressXz:
		z, err := xz.NewWriter(w)
		if err != nil {
			return err
		}
		zw = z
	default:
		return errorf(ErrInvalid, "export compression %q: use none, gzip, xz or zstd", c)
	}
	rep := newReporter(progressFrom(ctx))
	rep.start("export", img.Size)
	tw := tar.NewWriter(zw)
	first := map[inode]string{}
	var done int64
	buf := make([]byte, 1<<20)
	err = walkTree(ctx, img.Path, func(n *node) error {
		hdr := &tar.Header{
			Name:    "./" + n.rel,
			Mode:    int64(n.st.Mode & 07777),
			Uid:     int(n.st.Uid),
			Gid:     int(n.st.Gid),
			ModTime: time.Unix(n.st.Mtim.Sec, n.st.Mtim.Nsec),
			Format:  tar.FormatPAX,
		}
		if n.st.Nlink > 1 && !n.isDir() {
			k := inode{n.st.Dev, n.st.Ino}
			if f, ok := first[k]; ok {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, "./"+f
				return tw.WriteHeader(hdr)
			}
			first[k] = n.rel
		}
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
		xs, err := n.xattrs()
		if err != nil {
			return err
		}
		for _, x := range xs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+x.name] = string(x.value)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", n.rel, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := n.open()
		if err != nil {
			return err
		}
		defer f.Close()
		k, err := io.CopyBuffer(tw, io.LimitReader(f, hdr.Size), buf)
		if err != nil {
			return fmt.Errorf("%s: %w", n.rel, err)
		}
		if k != hdr.Size {
			return fmt.Errorf("%s: changed while exported (image trees must not change)", n.rel)
		}
		done += k
		rep.update(done)
		return nil
	}, nil)
	if err != nil {
		return fmt.Errorf("export image %q: %w", name, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("export image %q: %w", name, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("export image %q: %w", name, err)
	}
	rep.finish(done)
	return nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
