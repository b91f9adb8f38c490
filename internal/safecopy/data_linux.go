package safecopy

import (
	"context"
	"errors"

	"golang.org/x/sys/unix"
)

// errShrank is a source file that ended before the size it had when the copy
// began (the guest truncated it meanwhile).
var errShrank = errors.New("it shrank while it was copied")

// chunk is how much one system call copies: the copy is streamed, never held
// in memory, and an interrupt is seen between chunks.
const chunk = 16 << 20

// copyData copies the first size bytes of src to dst, keeping holes: only
// the data regions (SEEK_DATA, SEEK_HOLE) are copied, by copy_file_range
// where the kernel can (in-kernel, or a reflink), else by read and write; the
// file is then extended to size. A sparse 2 GiB image costs what its data
// does.
//
// One mover serves a whole copy: its buffer is reused, and once the kernel
// refused copy_file_range between the two sides (EXDEV from an overlay) it is
// not asked again for every file.
func (mv *mover) copyData(ctx context.Context, dst, src int, size int64) error {
	var off int64
	for off < size {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // a hole up to the end
		}
		hole := size
		if err != nil {
			data = off // no SEEK_DATA here: all of it is data
		} else if h, err := unix.Seek(src, data, unix.SEEK_HOLE); err == nil && h < size {
			hole = h
		}
		if data >= size {
			break
		}
		if err := mv.copyRange(ctx, dst, src, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	// The end of a file is a hole to SEEK_DATA too: a file truncated
	// meanwhile would come out padded with zeros.
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return err
	}
	if st.Size < size {
		return errShrank
	}
	return unix.Ftruncate(dst, size)
}

// mover moves file data; its zero value is ready.
type mover struct {
	buf     []byte // for read and write; nil until copy_file_range failed
	noRange bool   // copy_file_range does not work between the two sides
}

// copyRange copies n bytes at off from src to dst, at the same offset.
func (mv *mover) copyRange(ctx context.Context, dst, src int, off, n int64) error {
	end := off + n
	for off < end {
		if err := ctx.Err(); err != nil {
			return err
		}
		want := min(end-off, chunk)
		if !mv.noRange {
			in, out := off, off
			k, err := unix.CopyFileRange(src, &in, dst, &out, int(want), 0)
			switch {
			case err == nil && k > 0:
				off += int64(k)
				continue
			case err == nil:
				return errShrank
			case errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN):
				continue
			case errors.Is(err, unix.EXDEV), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS),
				errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EPERM), errors.Is(err, unix.EBADF):
				mv.noRange = true // not between these files: by hand
			default:
				return err
			}
		}
		if mv.buf == nil {
			mv.buf = make([]byte, 1<<20)
		}
		buf := mv.buf
		k, err := unix.Pread(src, buf[:min(want, int64(len(buf)))], off)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return err
		}
		if k == 0 {
			return errShrank
		}
		for w := 0; w < k; {
			m, err := unix.Pwrite(dst, buf[w:k], off+int64(w))
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return err
			}
			w += m
		}
		off += int64(k)
	}
	return nil
}
