package rootfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"time"
)

// TestReadAhead: what the source gives comes out in order, its error after
// its data (a decompressor's io.ErrUnexpectedEOF too, not taken for the
// end), again on every later read; Close stops a source that blocks.
func TestReadAhead(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (aheadChunks*aheadChunkSize+12345)/16)
	for _, tc := range []struct {
		name string
		err  error // after the data; nil: io.EOF
	}{
		{"clean end", nil},
		{"truncated", io.ErrUnexpectedEOF},
		{"corrupt", errors.New("digest mismatch")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var src io.Reader = iotest.HalfReader(bytes.NewReader(data))
			want := io.EOF
			if tc.err != nil {
				src, want = io.MultiReader(src, iotest.ErrReader(tc.err)), tc.err
			}
			ctx, cancel := context.WithCancel(context.Background())
			a := readAhead(ctx, cancel, src)
			defer a.Close()
			var got bytes.Buffer
			buf := make([]byte, 7000)
			var err error
			for err == nil {
				var n int
				n, err = a.Read(buf)
				got.Write(buf[:n])
			}
			if err != want || !bytes.Equal(got.Bytes(), data) {
				t.Fatalf("read %d of %d bytes, then %v; want all, then %v", got.Len(), len(data), err, want)
			}
			if n, err := a.Read(buf); n != 0 || err != want {
				t.Errorf("read after the end: %d, %v", n, err)
			}
		})
	}
	t.Run("close while the source blocks", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		a := readAhead(ctx, cancel, ctxReader{ctx})
		closed := make(chan struct{})
		go func() { a.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return")
		}
		if _, err := a.Read(make([]byte, 1)); !errors.Is(err, context.Canceled) {
			t.Errorf("read after Close: %v", err)
		}
	})
}

// ctxReader blocks until its context ends, as a stalled download does.
type ctxReader struct{ ctx context.Context }

func (r ctxReader) Read([]byte) (int, error) {
	<-r.ctx.Done()
	return 0, r.ctx.Err()
}
