package fsutil

import "os"

// RotatingFile is a log that appends to a file and, before a write that would
// take it past its limit, renames it to NAME.1 (replacing the one before) and
// starts a fresh NAME, so it costs at most about twice the limit on disk.
// Equivalent to logrotate's `size LIMIT` with `rotate 1`. A write larger than
// the limit still goes whole into a fresh file. It is not safe for concurrent
// use.
type RotatingFile struct {
	path string
	max  int64
	perm os.FileMode
	f    *os.File
	size int64
}

// RotatedName is where a RotatingFile at path keeps its previous content.
func RotatedName(path string) string { return path + ".1" }

// OpenRotating opens the log at path for appending, creating it with perm, and
// rotates it at max bytes. The directory must exist.
func OpenRotating(path string, max int64, perm os.FileMode) (*RotatingFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, perm)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &RotatingFile{path: path, max: max, perm: perm, f: f, size: st.Size()}, nil
}

// Write appends p, rotating first when p would take the file past the limit.
// When the fresh file cannot be made, the log is closed and every later Write
// fails with os.ErrClosed.
func (l *RotatingFile) Write(p []byte) (int, error) {
	if l.f == nil {
		return 0, os.ErrClosed
	}
	if l.size > 0 && l.size+int64(len(p)) > l.max {
		l.f.Close()
		l.f = nil
		// Should the rename fail, the truncation below still keeps the
		// limit: the disk matters more than the old lines.
		_ = os.Rename(l.path, RotatedName(l.path))
		f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, l.perm)
		if err != nil {
			return 0, err
		}
		l.f, l.size = f, 0
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, err
}

// Close closes the file; later writes fail with os.ErrClosed.
func (l *RotatingFile) Close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
