package testenv

import (
	"cmp"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// update is the -update flag of every test binary that imports testenv: Golden
// rewrites its files instead of comparing. It is only registered in test
// binaries (bench imports testenv too and has flags of its own).
var update = func() *bool {
	if testing.Testing() {
		return flag.Bool("update", false, "rewrite the golden files instead of comparing with them")
	}
	return new(bool)
}()

// Golden compares got with the golden file at path, or writes got there when
// the test runs with -update (go test -update, as Go's own go/printer tests).
// A difference is shown around its first differing line.
func Golden[T string | []byte](t testing.TB, path string, got T) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if d := Diff(string(want), string(got)); d != "" {
		t.Errorf("%s differs from the output (go test -update rewrites it if the change is intended):\n%s", path, d)
	}
}

// Diff describes where got first differs from want, line by line, with a few
// lines of context from each ("" when they are equal).
func Diff(want, got string) string {
	if want == got {
		return ""
	}
	lines := func(s string) []string {
		l := strings.SplitAfter(s, "\n")
		if l[len(l)-1] == "" {
			l = l[:len(l)-1]
		}
		return l
	}
	wl, gl := lines(want), lines(got)
	i := 0
	for i < len(wl) && i < len(gl) && wl[i] == gl[i] {
		i++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "first difference at line %d:\n", i+1)
	show := func(name string, lines []string) {
		from, to := max(0, i-2), min(len(lines), i+4)
		fmt.Fprintf(&b, "--- %s (lines %d-%d of %d):\n", name, from+1, to, len(lines))
		for _, l := range lines[from:to] {
			if !strings.HasSuffix(l, "\n") {
				l += " (no newline at the end)\n"
			}
			b.WriteString("\t" + l)
		}
	}
	show("want", wl)
	show("got", gl)
	return b.String()
}

// Eventually polls cond until it returns nil and fails t with cond's last
// error when it has not after timeout. It replaces a fixed sleep: a test waits
// for what it needs, as long as it takes and no longer. The polls start 10 ms
// apart and back off to 200 ms.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("after %s: %v", timeout, err)
	}
}

// Poll is Eventually for code without a testing.TB: it returns cond's last
// error when cond has not returned nil within timeout, or at once an error
// cond wrapped with Stop.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	pause := 10 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if s, ok := err.(stopped); ok {
			return s.err
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(pause)
		pause = min(2*pause, 200*time.Millisecond)
	}
}

// Stop wraps err so that Poll and Eventually give up at once and report it:
// the condition can no longer come true (the machine a test waits for ended).
func Stop(err error) error { return stopped{err} }

type stopped struct{ err error }

func (s stopped) Error() string { return s.err.Error() }

// Tail is the last n bytes of s, for logs quoted in a failure.
func Tail[T string | []byte](s T, n int) string {
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return string(s)
}

// AssertedErrors reads the errors the files in dir say they cause, as
// Podman's Quadlet test files carry their `## assert-…` lines: a comment line
//
//	# assert-error: LINE:COL: MESSAGE
//
// (LINE: MESSAGE for an error without a column) in the block of comment lines
// right above line LINE. It returns them as the loader prints them,
// "DIR/FILE:LINE:COL: MESSAGE", in the order of the files' names and of the
// lines and columns in each, and fails t when an assertion is not right above
// the line it names, is not one it knows, or a file asserts nothing.
func AssertedErrors(t testing.TB, dir string) []string {
	t.Helper()
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		path := filepath.Join(dir, f.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		type asserted struct {
			line, col int
			text      string
		}
		var list, pending []asserted
		for i, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			l = strings.TrimSpace(l)
			if !strings.HasPrefix(l, "#") {
				for _, a := range pending {
					if a.line != i+1 {
						t.Errorf("%s:%d: an assertion about line %d is right above line %d", path, i+1, a.line, i+1)
					}
				}
				list, pending = append(list, pending...), nil
				continue
			}
			kind, rest, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(l, "#")), ": ")
			if !strings.HasPrefix(kind, "assert-") {
				continue
			}
			var a asserted
			pos, msg, _ := strings.Cut(rest, ": ")
			line, col, hasCol := strings.Cut(pos, ":")
			a.line, err = strconv.Atoi(line)
			if err == nil && hasCol {
				a.col, err = strconv.Atoi(col)
			}
			if kind != "assert-error" || !ok || err != nil || msg == "" {
				t.Errorf("%s:%d: %q is not `# assert-error: LINE[:COL]: MESSAGE`", path, i+1, l)
				continue
			}
			a.text = path + ":" + rest
			pending = append(pending, a)
		}
		if len(pending) > 0 {
			t.Errorf("%s: assertions at the end, about no line", path)
		}
		if len(list) == 0 {
			t.Errorf("%s asserts no error", path)
		}
		slices.SortStableFunc(list, func(a, b asserted) int { return cmp.Or(cmp.Compare(a.line, b.line), cmp.Compare(a.col, b.col)) })
		for _, a := range list {
			out = append(out, a.text)
		}
	}
	return out
}
