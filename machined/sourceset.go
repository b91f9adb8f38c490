package machined

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"time"

	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/spec"
)

// sourceSet is every place definitions come from: the directories and Git
// repositories of berthd.yaml, and the snapshots `berth apply PATH` stored.
type sourceSet struct {
	dirs  []string
	gits  []*gitSource
	snaps snapshots

	mu      sync.Mutex
	gitData map[*gitSource][]File     // last good fetch of each repository
	info    map[string]api.SourceInfo // by location
}

func newSourceSet(cfg *config.Config) *sourceSet {
	s := &sourceSet{
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

// pollGit fetches every Git source and reports whether any moved to a new
// revision. A failed fetch keeps the last good content.
func (s *sourceSet) pollGit(ctx context.Context) bool {
	changed := false
	for _, g := range s.gits {
		old := g.rev
		files, rev, err := g.fetch(ctx)
		si := api.SourceInfo{Kind: "git", Location: g.location(), Revision: rev, Updated: time.Now()}
		s.mu.Lock()
		if err != nil {
			si.Error = err.Error()
			loggerFrom(ctx).Warn("git source", "source", g.location(), "err", err)
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

// isWatchedDir reports whether path is one of berthd.yaml's directories (or
// inside one): applying it is a plain reconcile, not a snapshot.
func (s *sourceSet) isWatchedDir(path string) bool {
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

// load gathers the files of every source and decodes them as one set, so that a
// name declared twice anywhere, or a reference to a network declared nowhere, is
// an error. extra, when given, replaces (or adds) the snapshot of its path: what
// `berth plan PATH` and `berth apply PATH` look at.
func (s *sourceSet) load(ctx context.Context, extra *Snapshot) (*spec.Set, []string) {
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
	if len(errs) > 0 {
		return set, errs
	}
	return set, nil
}

// sourceInfos lists the sources for `berth status` of the daemon.
func (s *sourceSet) sourceInfos() []api.SourceInfo {
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
