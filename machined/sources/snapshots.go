package sources

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/internal/fsutil"
)

// Snapshot is the set of definitions `berth apply PATH` handed to berth: a copy,
// so that later edits under PATH change nothing until the next apply (plan/apply
// as in a CI pipeline). Directories named in berthd.yaml are watched instead.
type Snapshot struct {
	Path    string    `json:"path"`
	Applied time.Time `json:"applied"`
	Files   []File    `json:"files"`
}

// snapshots keeps the applied snapshots in STATE/berthd/applied/.
type snapshots struct{ dir string }

func (s snapshots) file(p string) string {
	h := sha256.Sum256([]byte(p))
	return filepath.Join(s.dir, hex.EncodeToString(h[:8])+".json")
}

func (s snapshots) list() ([]Snapshot, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Snapshot
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var sn Snapshot
		if err := json.Unmarshal(data, &sn); err != nil {
			return nil, fmt.Errorf("applied definitions %s are corrupt (re-run berth apply for their path): %w", e.Name(), err)
		}
		out = append(out, sn)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func (s snapshots) save(sn Snapshot) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	data, err := json.Marshal(sn)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(s.file(sn.Path), data, 0o600)
}

func (s snapshots) remove(p string) (bool, error) {
	err := os.Remove(s.file(p))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// SaveSnapshot keeps sn as an applied source.
func (s *Set) SaveSnapshot(sn Snapshot) error { return s.snaps.save(sn) }

// ForgetSnapshot drops the applied source of path; false when there was none.
func (s *Set) ForgetSnapshot(path string) (bool, error) { return s.snaps.remove(path) }

// ReadSnapshot reads the definitions under path for plan and apply.
func ReadSnapshot(path string) (*Snapshot, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	files, err := ReadDirFiles(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no such file or directory: %w", path, errdefs.ErrInvalid)
	}
	if err != nil {
		return nil, err
	}
	return &Snapshot{Path: abs, Applied: time.Now(), Files: files}, nil
}
