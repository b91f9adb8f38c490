package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDiff(t *testing.T) {
	if d := Diff("a\nb\n", "a\nb\n"); d != "" {
		t.Errorf("equal texts: %q", d)
	}
	d := Diff("1\n2\n3\n4\n5\n", "1\n2\nthree\n4\n5\n")
	for _, want := range []string{"first difference at line 3:", "--- want (lines 1-5 of 5):", "\t3\n", "--- got (lines 1-5 of 5):", "\tthree\n"} {
		if !strings.Contains(d, want) {
			t.Errorf("diff lacks %q:\n%s", want, d)
		}
	}
	if d := Diff("a\n", "a\nb\n"); !strings.Contains(d, "first difference at line 2:") || !strings.Contains(d, "\tb\n") {
		t.Errorf("an added line:\n%s", d)
	}
	if d := Diff("a\n", "a"); !strings.Contains(d, "\ta (no newline at the end)\n") {
		t.Errorf("a missing newline:\n%s", d)
	}
}

func TestGoldenUpdate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "x.golden")
	old := *update
	defer func() { *update = old }()
	*update = true
	Golden(t, path, "hello\n")
	if b, err := os.ReadFile(path); err != nil || string(b) != "hello\n" {
		t.Fatalf("-update wrote %q, %v", b, err)
	}
	*update = false
	Golden(t, path, []byte("hello\n"))
}

func TestPoll(t *testing.T) {
	n := 0
	if err := Poll(time.Second, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Errorf("Poll = %v after %d calls", err, n)
	}
	start := time.Now()
	if err := Poll(50*time.Millisecond, func() error { return errors.New("never") }); err == nil || err.Error() != "never" {
		t.Errorf("Poll of a condition that never holds = %v, want its last error", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > time.Second {
		t.Errorf("Poll gave up after %s, want about 50ms", d)
	}
	n = 0
	if err := Poll(time.Minute, func() error { n++; return Stop(errors.New("ended")) }); err == nil || err.Error() != "ended" || n != 1 {
		t.Errorf("Poll of a stopped condition = %v after %d calls, want its error at once", err, n)
	}
}

func TestTail(t *testing.T) {
	if got := Tail("abcdef", 3); got != "def" {
		t.Errorf("Tail = %q", got)
	}
	if got := Tail([]byte("ab"), 3); got != "ab" {
		t.Errorf("Tail of a short log = %q", got)
	}
}
