package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/berthd/berth/internal/revert"
)

// A machine's first start with private users: berth idmaps the root, which
// takes the same time whatever the tree holds; nspawn -U does too where it
// can, and otherwise chowns every file of the tree to the range it picked
// (once: the tree keeps those owners). The large tree shows which one ran:
// the Debian guest with extraDirs×extraFiles small files and extraBig big
// ones more, about 500 MB.
const (
	extraDirs, extraFiles, extraFileSize = 600, 100, 4 << 10
	extraBig, extraBigSize               = 4, 64 << 20
)

// firstVariants are the variants whose first start is measured.
var firstVariants = []bootVariant{vBerth, vNspawnU, vNspawnUChown}

// bootTree is a tree a first start is measured on.
type bootTree struct {
	label, path  string
	files, bytes int64
}

// trees returns the cached guest ("small", only ever copied) and a copy of it
// with the extra files ("large"), made in the work directory, which r removes.
func (l *bootLab) trees(r *revert.Reverter) ([]*bootTree, error) {
	large := filepath.Join(l.work, "large")
	r.Add(func() { os.RemoveAll(large) })
	if err := rfRun("cp", "-a", l.cache, large); err != nil {
		return nil, err
	}
	if err := writeExtra(filepath.Join(large, "srv", "bench-extra")); err != nil {
		return nil, err
	}
	trees := []*bootTree{{label: "small", path: l.cache}, {label: "large", path: large}}
	for _, t := range trees {
		if err := t.count(); err != nil {
			return nil, err
		}
	}
	return trees, nil
}

// writeExtra fills dir with the extra files of the large tree.
func writeExtra(dir string) error {
	small := bytes.Repeat([]byte("berth bench extra file\n"), extraFileSize/23+1)[:extraFileSize]
	for d := 0; d < extraDirs; d++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		for f := 0; f < extraFiles; f++ {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%03d", f)), small, 0o644); err != nil {
				return err
			}
		}
	}
	chunk := bytes.Repeat(small, (1<<20)/len(small))
	for b := 0; b < extraBig; b++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("big%d", b)))
		if err != nil {
			return err
		}
		for n := 0; n < extraBigSize; n += len(chunk) {
			if _, err := f.Write(chunk[:min(len(chunk), extraBigSize-n)]); err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

// count sets the tree's number of entries (what a chown visits) and the
// bytes of its regular files.
func (t *bootTree) count() error {
	t.files, t.bytes = 0, 0
	return filepath.WalkDir(t.path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		t.files++
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			t.bytes += info.Size()
		}
		return nil
	})
}

// firstStarts boots each first-start variant firstRuns times on each tree,
// each time on a fresh copy of it (never booted, owned by root) under a new
// name (a range berth has not recorded), as a new machine's first start; the
// copy is removed afterwards. The series are keyed "VARIANT/TREE"; chowned
// says which variants left their copy with other owners.
func (l *bootLab) firstStarts(trees []*bootTree) (series map[string]*bootSeries, chowned map[string]bool, err error) {
	series, chowned = map[string]*bootSeries{}, map[string]bool{}
	dst := filepath.Join(l.work, "first")
	for i := 0; i < firstRuns; i++ {
		for _, t := range trees {
			for _, v := range firstVariants {
				k := v.key + "/" + t.label
				if series[k] == nil {
					series[k] = &bootSeries{}
				}
				if err := copyTree(t.path, dst); err != nil {
					return nil, nil, err
				}
				name := fmt.Sprintf("first%d-%s-%s", i+1, t.label, v.name())
				err := l.boot(v, dst, name, name, series[k])
				if st, serr := os.Stat(dst); serr == nil && st.Sys().(*syscall.Stat_t).Uid != 0 {
					chowned[v.key] = true
				}
				if rerr := os.RemoveAll(dst); err == nil && rerr != nil {
					err = rerr
				}
				if err != nil {
					return nil, nil, fmt.Errorf("%s, first start %d on the %s tree: %w", v.label, i+1, t.label, err)
				}
			}
		}
	}
	return series, chowned, nil
}
