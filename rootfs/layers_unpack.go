package rootfs

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// makeLayerTree makes the directory a layer is unpacked into, wd/tree, in
// block groups of its own (spreadInodes). ext4 starts its search for them at
// a hash of the new directory's name: were every tree made as "tree", every
// layer would go to the same groups, where the layers of a store removed a
// moment ago (a test's, a benchmark's) have just left their inodes, not to
// be reused yet. So it is made under a random name, then renamed, which
// moves no inode.
func makeLayerTree(wd *workDir) (string, error) {
	spreadInodes(int(wd.f.Fd()))
	tree := filepath.Join(wd.path, layerTreeDir)
	tmp := tree + "-" + strconv.FormatUint(rand.Uint64(), 36)
	if err := makeTreeDir(tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, tree); err != nil {
		return "", err
	}
	return tree, nil
}

// fsTopdirFL is FS_TOPDIR_FL of linux/fs.h, which x/sys/unix lacks.
const fsTopdirFL = 0x00020000

// spreadInodes marks the directory fd as the top of a directory hierarchy
// (ext4's FS_TOPDIR_FL, `chattr +T`), so that the kernel places each
// directory made in it, and what that then holds, in block groups of their
// own rather than next to the directory's (ext4's Orlov allocator).
//
// A layer's tree is made in its work directory, which lies beside every
// other work directory of the store, and of the whole /var, in the block
// groups where files come and go. Without a journal, ext4 does not reuse an
// inode deleted in the last minute (five while its inode table block is not
// written back) and looks at each free one in the group in turn to tell: after
// large deletions nearby (a prune, another tree removed, a test suite's
// temporary files) every file created there costs a scan of thousands of
// inodes, and unpacking a layer of thousands of files takes several times
// longer. Filesystems other than ext4 (and ext2, ext3) lack the flag or
// ignore it; failing to set it changes nothing but where the inodes go.
func spreadInodes(fd int) {
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsTopdirFL != 0 {
		return
	}
	_ = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, flags|fsTopdirFL)
}

// unpackLayer extracts the layer's uncompressed stream into tree and checks
// its sha256 against the diff ID: every byte, the tar's end and any padding
// after it included. count receives the compressed bytes read.
//
// The stream is read (downloaded, its blob checked, decompressed) by a
// goroutine of its own, a few chunks ahead of the extraction, which spends
// its time in the kernel creating files: on two cores or more the two
// overlap. The extraction's goroutine hashes what it takes.
func unpackLayer(ctx context.Context, l Layer, tree string, count func(int64)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rc, err := l.Open(ctx, count)
	if err != nil {
		return err
	}
	defer rc.Close()
	ahead := readAhead(ctx, cancel, rc)
	defer ahead.Close()
	h := sha256.New()
	r := io.TeeReader(ahead, h)
	if err := extractTar(ctx, r, tree); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("read archive: %w", err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != l.DiffID {
		return errorf(ErrInvalid, "its content's sha256 is %s, not the diff ID %s the image's config names: "+
			"the blob is corrupt or does not belong to the image; nothing of it was stored", got, l.DiffID)
	}
	return nil
}

// Read-ahead chunks: enough to keep the reader busy while the extractor
// creates a directory full of small files, little enough per layer.
const (
	aheadChunks    = 4
	aheadChunkSize = 512 << 10
)

// aheadReader reads src ahead of its reader, in a goroutine. What src
// returned, data and then its error, comes out in the same order.
type aheadReader struct {
	ctx    context.Context
	cancel context.CancelFunc // stops src's reads
	full   chan []byte        // chunks read, in order; closed after the last
	free   chan []byte        // chunks to fill
	stop   chan struct{}
	done   chan struct{} // closed when the goroutine returned
	err    error         // src's error (io.EOF at its end), read once full is closed
	cur    []byte
	off    int
	closed bool
}

// readAhead starts reading src; cancel must stop src's reads (it cancels
// the context src reads with).
func readAhead(ctx context.Context, cancel context.CancelFunc, src io.Reader) *aheadReader {
	a := &aheadReader{ctx: ctx, cancel: cancel, full: make(chan []byte, aheadChunks), free: make(chan []byte, aheadChunks),
		stop: make(chan struct{}), done: make(chan struct{})}
	for range aheadChunks {
		a.free <- make([]byte, aheadChunkSize)
	}
	go a.fill(src)
	return a
}

// fill is the goroutine: it fills free chunks from src and hands them on.
func (a *aheadReader) fill(src io.Reader) {
	defer close(a.done)
	defer close(a.full)
	for {
		var buf []byte
		select {
		case buf = <-a.free:
		case <-a.stop:
			a.err = a.stopped()
			return
		}
		n, err := readChunk(src, buf)
		if n > 0 {
			select {
			case a.full <- buf[:n]:
			case <-a.stop:
				a.err = a.stopped()
				return
			}
		}
		if err != nil {
			a.err = err
			return
		}
	}
}

// stopped is the error of reads after Close.
func (a *aheadReader) stopped() error { return cmp.Or(a.ctx.Err(), io.ErrClosedPipe) }

// readChunk reads into buf until it is full or src fails (io.EOF at its
// end). Unlike io.ReadFull it passes every error on as it is: a
// decompressor's io.ErrUnexpectedEOF is a truncated stream, not its end.
func readChunk(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := src.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (a *aheadReader) Read(p []byte) (int, error) {
	for a.off == len(a.cur) {
		if a.cur != nil {
			a.free <- a.cur[:cap(a.cur)] // never blocks: free holds every chunk
			a.cur, a.off = nil, 0
		}
		select {
		case buf, ok := <-a.full:
			if !ok {
				return 0, a.err
			}
			a.cur, a.off = buf, 0
		case <-a.ctx.Done():
			return 0, a.ctx.Err()
		}
	}
	n := copy(p, a.cur[a.off:])
	a.off += n
	return n, nil
}

// Close stops the goroutine and waits for it: src may be closed then.
func (a *aheadReader) Close() error {
	if !a.closed {
		a.closed = true
		a.cancel()
		close(a.stop)
	}
	<-a.done
	return nil
}
