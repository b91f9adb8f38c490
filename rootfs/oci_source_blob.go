package rootfs

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// blobOpener opens a layer's blob as stored (compressed).
type blobOpener func(ctx context.Context) (io.ReadCloser, error)

// layerBlob is one layer of an OCI source: where its blob is and what it
// must be. Every byte of the blob is checked, whatever the source already
// checks: its size while it is read (a blob larger than its manifest says is
// cut off there), its digest at its end.
type layerBlob struct {
	ref    string  // the image, for messages
	what   string  // the layer, for messages: layer 2/3 sha256:…
	digest v1.Hash // zero when the source does not know it (an archive's compressed layer)
	size   int64   // -1 when unknown
	open   blobOpener
}

func (b *layerBlob) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s", b.ref, b.what, fmt.Sprintf(format, args...))
}

// Open is Layer.Open: the blob's uncompressed tar stream. count, when set,
// is called with the number of blob bytes each read took. The stream is
// whole only when it is read to its end: the blob's digest is checked there,
// and a mismatch is the last read's error. A corrupt blob may decompress to
// something that is not a tar before its end: a reader whose tar fails
// learns whether the blob was at fault by reading the rest of the stream
// (io.Copy to io.Discard), whose error then names the digest mismatch.
//
// The blob is read and checked by a goroutine of its own, ahead of the
// decompressor, so that its download and digest do not hold up the
// decompression (which takes the longest of a layer's unpacking).
func (b *layerBlob) Open(ctx context.Context, count func(n int64)) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	rawBlob, err := b.open(ctx)
	if err != nil {
		cancel()
		return nil, b.errorf("%v", err)
	}
	v := &blobVerifier{r: rawBlob, b: b, h: sha256.New(), count: count}
	ahead := readAhead(ctx, cancel, v)
	raw := &aheadCloser{ahead: ahead, raw: rawBlob}
	br := bufio.NewReaderSize(ahead, 256<<10)
	head, err := br.Peek(6)
	if err != nil && err != io.EOF {
		raw.Close()
		return nil, err // already named by the verifier
	}
	var dec io.ReadCloser
	switch c := sniff(head); c {
	case CompressGzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			raw.Close()
			return nil, b.errorf("gzip: %v", err)
		}
		dec = zr
	case CompressZstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(1<<30))
		if err != nil {
			raw.Close()
			return nil, b.errorf("zstd: %v", err)
		}
		dec = zr.IOReadCloser()
	case CompressNone:
		dec = io.NopCloser(br)
	default:
		raw.Close()
		return nil, errorf(ErrUnsupported, "%s: %s: compressed with %s: an OCI layer is a tar, plain or compressed with gzip or zstd", b.ref, b.what, c)
	}
	return &layerStream{ctx: ctx, dec: dec, rest: br, raw: raw, b: b}, nil
}

// layerStream is a layer's uncompressed tar stream.
type layerStream struct {
	ctx  context.Context
	dec  io.ReadCloser
	rest *bufio.Reader // the blob under dec
	raw  io.Closer
	b    *layerBlob
}

func (s *layerStream) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.dec.Read(p)
	switch {
	case err == io.EOF:
		// The decompressor may stop short of the blob's end (a gzip
		// member's trailer read, a tar's end marker): read the rest, so
		// that the verifier sees every byte and checks the digest.
		if _, derr := io.Copy(io.Discard, s.rest); derr != nil {
			return n, derr
		}
		return n, io.EOF
	case err != nil && !errors.Is(err, errBlob):
		// A blob that is not what its digest says often fails to
		// decompress first: read it to its end, and blame the blob when
		// its digest does not match.
		if _, derr := io.Copy(io.Discard, s.rest); errors.Is(derr, errBlob) {
			return n, derr
		}
		return n, s.b.errorf("%v", err)
	}
	return n, err
}

func (s *layerStream) Close() error {
	s.dec.Close()
	return s.raw.Close()
}

// aheadCloser closes a blob read ahead: the goroutine that reads it first.
type aheadCloser struct {
	ahead *aheadReader
	raw   io.Closer
}

func (c *aheadCloser) Close() error {
	c.ahead.Close()
	return c.raw.Close()
}

// errBlob marks the verifier's errors, which already name the layer.
var errBlob = errors.New("blob")

type blobError struct{ msg string }

func (e *blobError) Error() string        { return e.msg }
func (e *blobError) Is(target error) bool { return target == errBlob }

// blobVerifier reads a blob and checks it against its layer's size and digest.
type blobVerifier struct {
	r     io.Reader
	b     *layerBlob
	h     hash.Hash
	n     int64
	count func(int64)
	err   error // sticky
}

func (v *blobVerifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if v.b.size >= 0 && int64(len(p)) > v.b.size-v.n+1 {
		p = p[:v.b.size-v.n+1] // one byte past the end tells a blob that is too long
	}
	n, err := v.r.Read(p)
	if n > 0 {
		v.h.Write(p[:n])
		v.n += int64(n)
		if v.count != nil {
			v.count(int64(n))
		}
	}
	if v.b.size >= 0 && v.n > v.b.size {
		v.err = v.fail("the blob is larger than the %d bytes its manifest says", v.b.size)
		return n, v.err
	}
	switch {
	case err == io.EOF || err != nil && v.b.size >= 0 && v.n == v.b.size:
		// At the end, or the source's own check failed there (a
		// registry's digest verification): tell what is wrong ourselves.
		if err := v.atEnd(); err != nil {
			v.err = err
			return n, err
		}
		return n, io.EOF
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		v.err = v.fail("%v", err)
		return n, v.err
	case err != nil && v.b.size >= 0:
		// The connection dropped, the server stalled or its own check
		// failed early: either way the blob stopped short.
		v.err = v.fail("truncated: the blob stopped after %d of its %d bytes: %v", v.n, v.b.size, err)
		return n, v.err
	case err != nil:
		v.err = v.fail("reading the blob failed after %d bytes: %v", v.n, err)
		return n, v.err
	}
	return n, nil
}

// atEnd checks the whole blob: its size and its digest.
func (v *blobVerifier) atEnd() error {
	if v.b.size >= 0 && v.n < v.b.size {
		return v.fail("truncated: the blob stopped after %d of its %d bytes", v.n, v.b.size)
	}
	if v.b.digest.Hex == "" {
		return nil
	}
	got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(v.h.Sum(nil))}
	if v.b.digest.Algorithm != "sha256" {
		return v.fail("digest algorithm %s is not supported", v.b.digest.Algorithm)
	}
	if got != v.b.digest {
		return v.fail("digest mismatch: the blob's %d bytes hash to %s: the blob is corrupt (pull again, or fix the source)", v.n, got)
	}
	return nil
}

func (v *blobVerifier) fail(format string, args ...any) error {
	return &blobError{msg: v.b.errorf(format, args...).Error()}
}
