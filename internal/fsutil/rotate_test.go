package fsutil

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestRotatingFile: the file never passes its limit (but for one write larger
// than the limit), the previous content is in NAME.1, and an existing file's
// size counts from the start.
func TestRotatingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.log")
	if err := os.WriteFile(p, []byte("012345678\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := OpenRotating(p, 30, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte("abcdefghi\n")
	for range 2 {
		if n, err := l.Write(line); n != len(line) || err != nil {
			t.Fatal(n, err)
		}
	}
	if cur, _ := os.ReadFile(p); len(cur) != 30 {
		t.Errorf("before the limit: %q", cur)
	}
	if _, err := os.Stat(RotatedName(p)); err == nil {
		t.Error("rotated before the limit")
	}
	l.Write([]byte("next\n"))
	cur, _ := os.ReadFile(p)
	old, _ := os.ReadFile(RotatedName(p))
	if string(cur) != "next\n" || !bytes.HasPrefix(old, []byte("012345678\nabc")) || len(old) != 30 {
		t.Errorf("after the limit: current %q, rotated %q", cur, old)
	}
	big := bytes.Repeat([]byte("x"), 50)
	l.Write(big)
	if cur, _ := os.ReadFile(p); !bytes.Equal(cur, big) {
		t.Errorf("a write over the limit: %d bytes", len(cur))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Write(line); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
}
