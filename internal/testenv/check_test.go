package testenv

import (
	"errors"
	"fmt"
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

// recorder is a testing.TB that keeps what Errorf reports.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestAssertedErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", "# About a.\n# assert-error: 4:3: b: second\n#   assert-error: 4:1: a: first\nkey: v\n  # assert-error: 6: invalid YAML: end\n[\n")
	write("b.yaml", "# assert-error: 2:1: x: y\nx: y\n")
	got := AssertedErrors(t, dir)
	want := []string{dir + "/a.yaml:4:1: a: first", dir + "/a.yaml:4:3: b: second", dir + "/a.yaml:6: invalid YAML: end", dir + "/b.yaml:2:1: x: y"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("AssertedErrors =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	bad := t.TempDir()
	for name, s := range map[string]string{
		"misplaced.yaml": "# assert-error: 3:1: a: b\nkey: v\nother: w\n",
		"format.yaml":    "# assert-error: line 1: a\n# assert-eror: 2:1: a: b\nkey: v\n",
		"none.yaml":      "# nothing asserted\nkey: v\n",
		"dangling.yaml":  "key: v\n# assert-error: 3:1: a: b\n",
	} {
		if err := os.WriteFile(filepath.Join(bad, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := &recorder{TB: t}
	AssertedErrors(r, bad)
	for _, want := range []string{"misplaced.yaml:2: an assertion about line 3 is right above line 2", "format.yaml:1: \"# assert-error: line 1: a\" is not",
		"format.yaml:2: \"# assert-eror: 2:1: a: b\" is not", "none.yaml asserts no error", "dangling.yaml: assertions at the end"} {
		found := false
		for _, e := range r.errs {
			found = found || strings.Contains(e, want)
		}
		if !found {
			t.Errorf("no error %q among:\n%s", want, strings.Join(r.errs, "\n"))
		}
	}
}
