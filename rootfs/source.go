package rootfs

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/berthd/berth/internal/osimage"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Source is where an image's tree comes from: a Dir, a Tar or a Debootstrap.
type Source interface {
	// String describes the source for the image's metadata and for people.
	String() string
	check() error
	// build fills the existing, empty directory dst.
	build(ctx context.Context, dst string, rep *reporter) error
}

// Dir is a directory tree on the host, copied into the store (owners, modes,
// xattrs, hard links, device nodes and times kept).
type Dir struct {
	Path string
}

// Tar is a tar archive, plain or compressed with gzip, xz, zstd or bzip2 (told
// by its first bytes, whatever its name says), at a local path or an http(s) URL.
// When SHA256 is set the archive's hash must match it or the import fails.
type Tar struct {
	Location string
	SHA256   string
}

// Debootstrap builds a Debian (or derivative) tree: debootstrap
// --variant=VARIANT --include=PACKAGES SUITE DIR MIRROR.
type Debootstrap struct {
	Suite    string
	Mirror   string   // default http://deb.debian.org/debian
	Variant  string   // default minbase; "standard" means debootstrap's default set
	Packages []string // extra packages (--include)
}

// DefaultMirror is the mirror of a Debootstrap source without one.
const DefaultMirror = "http://deb.debian.org/debian"

func (d Dir) String() string { return "dir:" + d.Path }

func (d Dir) check() error {
	if !filepath.IsAbs(d.Path) {
		return errorf(ErrInvalid, "directory %q is not an absolute path", d.Path)
	}
	fi, err := os.Stat(d.Path)
	if err != nil {
		return errorf(ErrInvalid, "directory %s: %w", d.Path, err)
	}
	if !fi.IsDir() {
		return errorf(ErrInvalid, "%s is not a directory: import a file as a tar archive", d.Path)
	}
	return nil
}

func (d Dir) build(ctx context.Context, dst string, rep *reporter) error {
	// The total is unknown without a walk of its own; copy reports bytes done.
	rep.start("copy", 0)
	n, err := copyTree(ctx, d.Path, dst, copyOptions{progress: rep.update})
	rep.finish(n)
	return err
}

func (t Tar) String() string {
	if t.SHA256 != "" {
		return "tar:" + t.Location + "#sha256=" + strings.ToLower(t.SHA256)
	}
	return "tar:" + t.Location
}

var sha256RE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

func (t Tar) isURL() bool {
	return strings.HasPrefix(t.Location, "http://") || strings.HasPrefix(t.Location, "https://")
}

func (t Tar) check() error {
	if t.SHA256 != "" && !sha256RE.MatchString(t.SHA256) {
		return errorf(ErrInvalid, "sha256 %q is not 64 hex digits", t.SHA256)
	}
	if t.isURL() {
		return nil
	}
	if strings.Contains(t.Location, "://") {
		return errorf(ErrInvalid, "archive %q: only http:// and https:// URLs are supported", t.Location)
	}
	fi, err := os.Stat(t.Location)
	if err != nil {
		return errorf(ErrInvalid, "archive %s: %w", t.Location, err)
	}
	if fi.IsDir() {
		return errorf(ErrInvalid, "%s is a directory: import it as a directory source", t.Location)
	}
	return nil
}

func (t Tar) build(ctx context.Context, dst string, rep *reporter) error {
	raw, total, err := t.open(ctx)
	if err != nil {
		return err
	}
	defer raw.Close()
	phase := "extract"
	if t.isURL() {
		phase = "download"
	}
	rep.start(phase, total)
	// The hash covers every byte of the file, read once: it is checked after
	// extraction (into a work directory that is thrown away on a mismatch),
	// which spares a second pass over the archive. The extractor is safe for
	// any input, so unverified bytes reach nothing but that directory.
	h := sha256.New()
	var done atomic.Int64
	counted := io.TeeReader(raw, writerFunc(func(b []byte) (int, error) {
		h.Write(b)
		rep.update(done.Add(int64(len(b))))
		return len(b), nil
	}))
	br := bufio.NewReaderSize(counted, 1<<20)
	dec, err := decompress(br)
	if err != nil {
		return fmt.Errorf("archive %s: %w", t.Location, err)
	}
	defer dec.Close()
	if err := extractTar(ctx, dec, dst); err != nil {
		return fmt.Errorf("archive %s: %w", t.Location, err)
	}
	// Hash what follows the tar's end marker too: first the rest of the
	// decompressed stream (which makes an xz process read all its input; its
	// errors past the end of the archive do not matter), then the raw rest.
	_, _ = io.Copy(io.Discard, dec)
	if _, err := io.Copy(io.Discard, br); err != nil {
		return fmt.Errorf("archive %s: %w", t.Location, err)
	}
	rep.finish(done.Load())
	if t.SHA256 != "" {
		if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(t.SHA256) {
			return errorf(ErrInvalid, "archive %s: sha256 is %s, not the expected %s: the file is corrupt or has changed; check the sha256 given for it", t.Location, got, strings.ToLower(t.SHA256))
		}
	}
	return nil
}

// open opens the archive and tells its size (0 when unknown).
func (t Tar) open(ctx context.Context) (io.ReadCloser, int64, error) {
	if !t.isURL() {
		f, err := os.Open(t.Location)
		if err != nil {
			return nil, 0, fmt.Errorf("archive: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("archive: %w", err)
		}
		return f, fi.Size(), nil
	}
	// The request lives in a context of its own, which the idle timer cancels.
	ctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.Location, nil)
	if err != nil {
		cancel(nil)
		return nil, 0, errorf(ErrInvalid, "archive URL %q: %w", t.Location, err)
	}
	req.Header.Set("User-Agent", "berth")
	resp, err := httpClient.Do(req)
	if err != nil {
		cancel(nil)
		return nil, 0, fmt.Errorf("download %s: %w", t.Location, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel(nil)
		return nil, 0, fmt.Errorf("download %s: server answered %s", t.Location, resp.Status)
	}
	total := resp.ContentLength
	if total < 0 || resp.Uncompressed {
		total = 0
	}
	return newIdleBody(ctx, cancel, resp.Body, downloadIdleTimeout, t.Location), total, nil
}

// httpClient fetches archives. It has no overall timeout (an image can take
// long to download), but every step that waits on the server has one, so a
// server that stalls fails the import instead of blocking it (and, under
// berthd, the whole reconcile) forever. The body's own limit is downloadIdleTimeout.
var httpClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   15 * time.Second,
	ResponseHeaderTimeout: 60 * time.Second,
	ExpectContinueTimeout: time.Second,
	IdleConnTimeout:       90 * time.Second,
	ForceAttemptHTTP2:     true,
}}

// downloadIdleTimeout is how long a download may wait for its next byte before
// it is abandoned. A variable for the tests.
var downloadIdleTimeout = 60 * time.Second

// idleBody is a response body whose reads fail once the server has sent nothing
// for idle while berth waited for it. The clock runs only inside Read, so time
// spent extracting what arrived never counts against the server.
type idleBody struct {
	body    io.ReadCloser
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	idle    time.Duration
	stalled error // the cause the timer cancels ctx with
}

func newIdleBody(ctx context.Context, cancel context.CancelCauseFunc, body io.ReadCloser, idle time.Duration, url string) *idleBody {
	b := &idleBody{body: body, ctx: ctx, cancel: cancel, idle: idle,
		stalled: fmt.Errorf("download %s: no data from the server for %v: it stalled (try again later, or use another server)", url, idle)}
	b.timer = time.AfterFunc(idle, func() { cancel(b.stalled) })
	b.timer.Stop()
	return b
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.body.Read(p)
	b.timer.Stop()
	if err != nil && err != io.EOF && context.Cause(b.ctx) == b.stalled {
		return n, b.stalled // rather than "context canceled"
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.body.Close()
	b.cancel(nil)
	return err
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// Compression is how an archive is compressed.
type Compression string

const (
	CompressNone  Compression = "none"
	CompressGzip  Compression = "gzip"
	CompressXz    Compression = "xz"
	CompressZstd  Compression = "zstd"
	CompressBzip2 Compression = "bzip2"
)

// sniff tells the compression from an archive's first bytes.
func sniff(head []byte) Compression {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return CompressGzip
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return CompressXz
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return CompressZstd
	case bytes.HasPrefix(head, []byte("BZh")):
		return CompressBzip2
	}
	return CompressNone
}

// decompress wraps br in the decompressor its first bytes call for.
func decompress(br *bufio.Reader) (io.ReadCloser, error) {
	head, _ := br.Peek(6)
	switch sniff(head) {
	case CompressGzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case CompressXz:
		return xzReader(br)
	case CompressZstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(1<<30))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	case CompressBzip2:
		return io.NopCloser(bzip2.NewReader(br)), nil
	}
	if len(head) == 0 {
		return nil, errorf(ErrInvalid, "the archive is empty")
	}
	return io.NopCloser(br), nil
}

// xzReader decompresses with the xz program when the host has it (several times
// faster than the pure Go decoder), else in process.
func xzReader(r io.Reader) (io.ReadCloser, error) {
	if p, err := exec.LookPath("xz"); err == nil {
		cmd := exec.Command(p, "--decompress", "--stdout", "--threads=0")
		cmd.Stdin = r
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err == nil {
			if err = cmd.Start(); err == nil {
				return &cmdReader{ReadCloser: out, cmd: cmd, stderr: &stderr}, nil
			}
		}
	}
	xr, err := xz.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	return io.NopCloser(xr), nil
}

// cmdReader is a decompressor process's output; a failure of the process shows
// as a read error at the end.
type cmdReader struct {
	io.ReadCloser
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   bool
}

func (c *cmdReader) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	if err == io.EOF && !c.done {
		c.done = true
		if werr := c.cmd.Wait(); werr != nil {
			return n, fmt.Errorf("xz: %v: %s", werr, strings.TrimSpace(c.stderr.String()))
		}
	}
	return n, err
}

func (c *cmdReader) Close() error {
	c.ReadCloser.Close()
	if !c.done {
		c.done = true
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
	return nil
}

func (d Debootstrap) String() string {
	s := "debootstrap:" + d.Suite + " " + d.variant() + " " + d.mirror()
	if len(d.Packages) > 0 {
		s += " +" + strings.Join(d.Packages, ",")
	}
	return s
}

func (d Debootstrap) mirror() string {
	if d.Mirror == "" {
		return DefaultMirror
	}
	return d.Mirror
}

func (d Debootstrap) variant() string {
	if d.Variant == "" {
		return "minbase"
	}
	return d.Variant
}

var (
	suiteRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]*$`)
	packageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
)

func (d Debootstrap) check() error {
	if !suiteRE.MatchString(d.Suite) {
		return errorf(ErrInvalid, "debootstrap suite %q is not a release name such as bookworm", d.Suite)
	}
	switch d.variant() {
	case "minbase", "buildd", "fakechroot", "standard":
	default:
		return errorf(ErrInvalid, "debootstrap variant %q: use minbase, buildd, fakechroot or standard", d.Variant)
	}
	if m := d.mirror(); !strings.HasPrefix(m, "http://") && !strings.HasPrefix(m, "https://") && !strings.HasPrefix(m, "file:/") {
		return errorf(ErrInvalid, "debootstrap mirror %q is not an http(s):// or file:/ URL", m)
	}
	for _, p := range d.Packages {
		if !packageRE.MatchString(p) {
			return errorf(ErrInvalid, "debootstrap package %q is not a Debian package name", p)
		}
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return errorf(ErrUnsupported, "debootstrap is not installed on this host (apt-get install debootstrap)")
	}
	return nil
}

func (d Debootstrap) build(ctx context.Context, dst string, rep *reporter) error {
	args := []string{}
	if v := d.variant(); v != "standard" {
		args = append(args, "--variant="+v)
	}
	if len(d.Packages) > 0 {
		args = append(args, "--include="+strings.Join(d.Packages, ","))
	}
	args = append(args, d.Suite, dst, d.mirror())
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	rep.start("debootstrap", 0)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("debootstrap: %w", err)
	}
	tail := readProgress(out, rep.message)
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("debootstrap %s: %w\n%s", strings.Join(args, " "), err, strings.Join(tail, "\n"))
	}
	// Downloaded .debs are only debootstrap's cache.
	arch := filepath.Join(dst, "var/cache/apt/archives")
	if ents, err := os.ReadDir(arch); err == nil {
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".deb") {
				os.Remove(filepath.Join(arch, e.Name()))
			}
		}
	}
	return osimage.Generalize(dst)
}

// Limits of readProgress: a line is kept up to maxLineKept bytes (the rest is
// read and dropped), and the last tailLines lines go into a failure's message.
const (
	maxLineKept = 4 << 10
	tailLines   = 15
)

// readProgress reads debootstrap's output to its end. Its "I: Retrieving/
// Validating/Unpacking/Configuring X..." lines go to message; the last lines
// are returned for the error on failure. It reads every byte whatever the
// lines look like: a reader that stopped early (bufio.Scanner stops at a line
// over 64 KiB) would leave debootstrap blocked on a full pipe and cmd.Wait
// waiting for it forever.
func readProgress(r io.Reader, message func(string)) []string {
	br := bufio.NewReaderSize(r, 64<<10)
	var tail []string
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if room := maxLineKept - len(line); room > 0 {
			line = append(line, chunk[:min(len(chunk), room)]...)
		}
		if err == bufio.ErrBufferFull {
			continue // the rest of a long line
		}
		if l := strings.TrimRight(string(line), "\r\n"); l != "" || err == nil {
			tail = append(tail, l)
			if len(tail) > tailLines {
				tail = tail[1:]
			}
			if m, ok := strings.CutPrefix(l, "I: "); ok {
				message(m)
			}
		}
		line = line[:0]
		if err != nil {
			// EOF, or a read error: drain what is left so the writer never blocks.
			_, _ = io.Copy(io.Discard, br)
			return tail
		}
	}
}
