// Package sources is where berthd's definitions come from: the directories of
// berthd.yaml (watched), its Git repositories (polled, kept as bare clones), and
// the snapshots `berth apply PATH` stored; Load reads them all as one validated
// spec.Set, so a name declared twice anywhere is an error.
package sources

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/berthd/berth/internal/logctx"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/spec"
	"github.com/fsnotify/fsnotify"
)

// Set is every place definitions come from: the directories and Git
// repositories of berthd.yaml, and the snapshots `berth apply PATH` stored.
type Set struct {
	dirs  []string
	gits  []*gitSource
	snaps snapshots

	mu      sync.Mutex
	gitData map[*gitSource][]File     // last good fetch of each repository
	info    map[string]api.SourceInfo // by location
}

func New(cfg *config.Config) *Set {
	s := &Set{
		snaps:   snapshots{dir: filepath.Join(cfg.StateDir, "berthd", "applied")},
		gitData: map[*gitSource][]File{},
		info:    map[string]api.SourceInfo{},
	}
	for _, src := range cfg.Sources {
		switch {
		case src.Path != "":
			s.dirs = append(s.dirs, src.Path)
		case src.Git != nil:
			s.gits = append(s.gits, newGitSource(cfg.StateDir, *src.Git))
		}
	}
	return s
}

// PollGit fetches every Git source and reports whether any moved to a new
// revision. A failed fetch keeps the last good content.
func (s *Set) PollGit(ctx context.Context) bool {
	changed := false
	for _, g := range s.gits {
		old := g.rev
		files, rev, err := g.fetch(ctx)
		si := api.SourceInfo{Kind: "git", Location: g.location(), Revision: rev, Updated: time.Now()}
		s.mu.Lock()
		if err != nil {
			si.Error = err.Error()
			logctx.From(ctx).Warn("git source", "source", g.location(), "err", err)
		} else {
			s.gitData[g] = files
			if rev != old {
				changed = true
			}
		}
		s.info[g.location()] = si
		s.mu.Unlock()
	}
	return changed
}

// IsWatchedDir reports whether path is one of berthd.yaml's directories (or
// inside one): applying it is a plain reconcile, not a snapshot.
func (s *Set) IsWatchedDir(path string) bool {
	for _, d := range s.dirs {
		if rel, err := filepath.Rel(d, path); err == nil && rel != ".." && !startsWithDotDot(rel) {
			return true
		}
	}
	return false
}

func startsWithDotDot(rel string) bool {
	return len(rel) >= 3 && rel[:3] == "../"
}

// Load gathers the files of every source and decodes them as one set, so that a
// name declared twice anywhere, or a reference to a network declared nowhere, is
// an error. extra, when given, replaces (or adds) the snapshot of its path: what
// `berth plan PATH` and `berth apply PATH` look at.
func (s *Set) Load(ctx context.Context, extra *Snapshot) (*spec.Set, []string) {
	var files []File
	var errs []string
	for _, d := range s.dirs {
		dirFiles, err := ReadDirFiles(d)
		si := api.SourceInfo{Kind: "dir", Location: d, Updated: time.Now()}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// A configured directory that does not exist yet declares nothing.
			si.Error = "does not exist"
		case err != nil:
			si.Error = err.Error()
			errs = append(errs, fmt.Sprintf("source %s: %v", d, err))
		}
		files = append(files, dirFiles...)
		s.mu.Lock()
		s.info[d] = si
		s.mu.Unlock()
	}
	s.mu.Lock()
	for _, g := range s.gits {
		files = append(files, s.gitData[g]...)
	}
	s.mu.Unlock()
	snaps, err := s.snaps.list()
	if err != nil {
		errs = append(errs, err.Error())
	}
	for _, sn := range snaps {
		if extra != nil && sn.Path == extra.Path {
			continue
		}
		files = append(files, sn.Files...)
		s.mu.Lock()
		s.info["applied:"+sn.Path] = api.SourceInfo{Kind: "applied", Location: sn.Path, Updated: sn.Applied}
		s.mu.Unlock()
	}
	if extra != nil {
		files = append(files, extra.Files...)
	}
	set, err := parseFiles(files)
	if err != nil {
		errs = append(errs, errorLines(err)...)
	}
	if extra != nil {
		errs = append(errs, literalSecrets(set, extra.Files)...)
	}
	if len(errs) > 0 {
		return set, errs
	}
	return set, nil
}

// Infos lists the sources for `berth status` of the daemon.
func (s *Set) Infos() []api.SourceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []api.SourceInfo
	for _, d := range s.dirs {
		out = append(out, s.info[d])
	}
	for _, g := range s.gits {
		if si, ok := s.info[g.location()]; ok {
			out = append(out, si)
		} else {
			out = append(out, api.SourceInfo{Kind: "git", Location: g.location()})
		}
	}
	snaps, _ := s.snaps.list()
	for _, sn := range snaps {
		out = append(out, api.SourceInfo{Kind: "applied", Location: sn.Path, Updated: sn.Applied})
	}
	return out
}

// parseFiles decodes definition files into one validated set.
func parseFiles(files []File) (*spec.Set, error) {
	sf := make([]spec.File, len(files))
	for i, f := range files {
		sf[i] = spec.File{Name: f.Name, Data: f.Data}
	}
	return spec.ParseFiles(sf)
}

// errorLines splits a spec.ErrorList (or any error) into one line per error.
func errorLines(err error) []string {
	var el spec.ErrorList
	if errors.As(err, &el) {
		out := make([]string, len(el))
		for i, e := range el {
			out[i] = e.Error()
		}
		return out
	}
	return []string{err.Error()}
}

// GitInterval is how often the Git sources are polled: the shortest interval
// any of them asks for, an hour when there are none.
func (s *Set) GitInterval() time.Duration {
	iv := time.Hour
	for _, g := range s.gits {
		if d := time.Duration(g.cfg.Interval); d > 0 && d < iv {
			iv = d
		}
	}
	return iv
}

// WatchDirs calls changed shortly after any change under the configured
// directories, until ctx ends or the watcher is closed (editors write several
// events per save: they are coalesced). Without directories it does nothing.
func (s *Set) WatchDirs(ctx context.Context, changed func()) (io.Closer, error) {
	if len(s.dirs) == 0 {
		return io.NopCloser(nil), nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	add := func(root string) {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = w.Add(p)
			}
			return nil
		})
	}
	for _, d := range s.dirs {
		if _, err := os.Stat(d); err != nil {
			// Watch the parent so the directory's creation is noticed.
			_ = w.Add(filepath.Dir(d))
			continue
		}
		add(d)
	}
	go func() {
		var debounce <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Has(fsnotify.Create) {
					if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
						add(ev.Name)
					}
				}
				debounce = time.After(300 * time.Millisecond)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				logctx.From(ctx).Warn("watching definitions", "err", err)
			case <-debounce:
				debounce = nil
				changed()
			}
		}
	}()
	return w, nil
}

// File is one definition file as a source holds it: Name is what errors print
// (the real path for a directory source, "REPO:path" for Git), Data its content.
type File struct {
	Name string `json:"name"`
	Data []byte `json:"data"`
}

// ReadDirFiles reads the definition files under root (a file, or a directory
// walked recursively, hidden entries skipped), sorted by name: spec.ReadFiles,
// so a directory source is read as `berth validate` reads it.
func ReadDirFiles(root string) ([]File, error) {
	sf, err := spec.ReadFiles(root)
	files := make([]File, len(sf))
	for i, f := range sf {
		files[i] = File(f)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, err
}
