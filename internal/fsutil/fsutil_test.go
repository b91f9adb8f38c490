package fsutil

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLock: shared holders do not exclude each other, an exclusive one waits
// for them and then excludes everyone, within one process too.
func TestLock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub.lock")
	free := func(how int) bool {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return unix.Flock(int(f.Fd()), how|unix.LOCK_NB) == nil
	}
	a, err := Lock(p, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Lock(p, false)
	if err != nil {
		t.Fatal("a second shared lock:", err)
	}
	if free(unix.LOCK_EX) {
		t.Fatal("an exclusive lock is free while shared ones are held")
	}
	got := make(chan func())
	go func() {
		u, err := Lock(p, true)
		if err != nil {
			t.Error(err)
		}
		got <- u
	}()
	a()
	b()
	var u func()
	select {
	case u = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the exclusive lock was not granted after the shared ones were dropped")
	}
	if free(unix.LOCK_SH) {
		t.Error("a shared lock is free while an exclusive one is held")
	}
	u()
	if !free(unix.LOCK_EX) {
		t.Error("unlock did not drop the lock")
	}
	if _, err := Lock(filepath.Join(p, "x"), true); err == nil {
		t.Error("a lock under a regular file was taken")
	}
}

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

// TestTypeName: known magics by name, cifs's also as the negative number a
// signed 32-bit f_type gives, an unknown one by its hex.
func TestTypeName(t *testing.T) {
	for magic, want := range map[int64]string{
		0xef53:                    "ext4",
		0x858458f6:                "ramfs",
		0xff534d42:                "cifs",
		int64(int32(-0x00acb2be)): "cifs",
		0x1234:                    "filesystem 0x1234",
	} {
		if got := TypeName(magic); got != want {
			t.Errorf("TypeName(%#x) = %q, want %q", magic, got, want)
		}
	}
	if got, err := TypeOf(t.TempDir()); err != nil || got == "" {
		t.Errorf("TypeOf(a temporary directory) = %q, %v", got, err)
	}
}
