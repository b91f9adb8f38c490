package rootfs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
)

// FuzzCleanEntryPath checks that whatever a member name is, the cleaned path is
// relative, has no "." or ".." element and stays within the limits.
func FuzzCleanEntryPath(f *testing.F) {
	for _, s := range []string{"./etc/passwd", "../x", "/abs/../y", "a//b/./c", "", ".", strings.Repeat("a/", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		rel, err := cleanEntryPath(name)
		if err != nil {
			return
		}
		if strings.HasPrefix(rel, "/") || len(rel) > maxPathLen {
			t.Fatalf("cleanEntryPath(%q) = %q", name, rel)
		}
		if rel == "" {
			return
		}
		for _, el := range strings.Split(rel, "/") {
			if el == "" || el == "." || el == ".." {
				t.Fatalf("cleanEntryPath(%q) = %q has element %q", name, rel, el)
			}
		}
	})
}

// FuzzExtract unpacks archives of fuzzed entries — one per line, "f NAME",
// "d NAME", "l NAME TARGET" (symlink) or "h NAME TARGET" (hard link) — beside a
// canary directory, and checks that nothing outside the destination changes,
// whether the archive is accepted or refused.
func FuzzExtract(f *testing.F) {
	testenv.SkipUnlessRoot(f) // extraction keeps owners and device nodes
	for _, s := range []string{
		"l evil CANARY\nf evil/file",
		"d CANARY\nl evil CANARY\nf evil/file",
		"l a ../../..\nf a/CANARY/file",
		"h hl CANARY/file",
		"d d\nf d/x\nl d CANARY\nf d/file",
		"l s CANARY/file\nh h s\nf h",
		"l a b\nl b a\nf a/x",
		"f ../CANARY/file",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		base := t.TempDir()
		canary := filepath.Join(base, "canary")
		os.Mkdir(canary, 0o755)
		os.WriteFile(filepath.Join(canary, "file"), []byte("canary"), 0o644)
		dest := filepath.Join(base, "dest")
		os.Mkdir(dest, 0o755)
		var ents []ent
		for _, line := range strings.Split(spec, "\n") {
			fl := strings.Fields(strings.ReplaceAll(line, "CANARY", strings.TrimPrefix(canary, "/")))
			if len(fl) < 2 || len(ents) > 20 {
				continue
			}
			switch {
			case fl[0] == "f":
				ents = append(ents, file(fl[1], "pwned"))
			case fl[0] == "d":
				ents = append(ents, dir(fl[1]))
			case fl[0] == "l" && len(fl) == 3:
				ents = append(ents, symlink(fl[1], fl[2]))
			case fl[0] == "h" && len(fl) == 3:
				ents = append(ents, hardlink(fl[1], fl[2]))
			}
		}
		if len(ents) == 0 {
			return
		}
		var buf bytes.Buffer
		func() {
			defer func() { recover() }() // names archive/tar cannot write
			buf.Write(makeTarNoFail(ents))
		}()
		if buf.Len() == 0 {
			return
		}
		_ = extractTar(context.Background(), bytes.NewReader(buf.Bytes()), dest)
		if b, err := os.ReadFile(filepath.Join(canary, "file")); err != nil || string(b) != "canary" {
			t.Fatalf("canary changed: %q %v", b, err)
		}
		ents2, _ := os.ReadDir(canary)
		if len(ents2) != 1 {
			t.Fatalf("canary directory now holds %d entries", len(ents2))
		}
		top, _ := os.ReadDir(base)
		if len(top) != 2 {
			t.Fatalf("%s now holds %d entries", base, len(top))
		}
	})
}

// makeTarNoFail is makeTar that panics instead of failing the test on an entry
// archive/tar refuses to write.
func makeTarNoFail(ents []ent) []byte {
	return makeTar(panicTB{}, ents...)
}

type panicTB struct{ testing.TB }

func (panicTB) Helper()                   {}
func (panicTB) Fatalf(f string, a ...any) { panic(f) }
func (panicTB) Fatal(a ...any)            { panic("fatal") }
