package machined

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/spec"
	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	gitclient "github.com/go-git/go-git/v5/plumbing/transport/client"
	gitserver "github.com/go-git/go-git/v5/plumbing/transport/server"
)

func init() {
	// Local repositories (a path or file:// URL) are read in-process rather than
	// through the git-upload-pack binary, so a Git source needs no git installed.
	gitclient.InstallProtocol("file", gitserver.DefaultServer)
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

// gitSource follows one branch of a Git repository, kept as a bare clone under
// STATE/berthd/git/.
type gitSource struct {
	cfg  config.GitSource
	dir  string
	repo *git.Repository
	rev  string
}

func newGitSource(stateDir string, cfg config.GitSource) *gitSource {
	h := sha256.Sum256([]byte(cfg.URL + "\x00" + cfg.Branch))
	return &gitSource{cfg: cfg, dir: filepath.Join(stateDir, "berthd", "git", hex.EncodeToString(h[:8]))}
}

func (g *gitSource) location() string {
	loc := g.cfg.URL + "#" + g.cfg.Branch
	if g.cfg.Path != "" {
		loc += ":" + g.cfg.Path
	}
	return loc
}

// fetch brings the clone up to date and returns the branch head's files.
func (g *gitSource) fetch(ctx context.Context) ([]File, string, error) {
	ref := plumbing.NewBranchReferenceName(g.cfg.Branch)
	if g.repo == nil {
		r, err := git.PlainOpen(g.dir)
		if err != nil {
			_ = os.RemoveAll(g.dir)
			r, err = git.PlainInitWithOptions(g.dir, &git.PlainInitOptions{Bare: true})
			if err != nil {
				return nil, "", fmt.Errorf("git %s: %w", g.location(), err)
			}
			if _, err := r.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{g.cfg.URL}}); err != nil {
				return nil, "", fmt.Errorf("git %s: %w", g.location(), err)
			}
		}
		g.repo = r
	}
	refSpec := gitconfig.RefSpec(fmt.Sprintf("+%s:refs/remotes/origin/%s", ref, g.cfg.Branch))
	err := g.repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", RefSpecs: []gitconfig.RefSpec{refSpec}, Force: true, Tags: git.NoTags})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, g.rev, fmt.Errorf("git %s: fetch: %w", g.location(), err)
	}
	head, err := g.repo.Reference(plumbing.NewRemoteReferenceName("origin", g.cfg.Branch), true)
	if err != nil {
		return nil, g.rev, fmt.Errorf("git %s: branch %q: %w", g.location(), g.cfg.Branch, err)
	}
	commit, err := g.repo.CommitObject(head.Hash())
	if err != nil {
		return nil, g.rev, fmt.Errorf("git %s: %w", g.location(), err)
	}
	tree, err := commit.Tree()
	if err != nil {
		return nil, g.rev, fmt.Errorf("git %s: %w", g.location(), err)
	}
	prefix := strings.Trim(path.Clean("/"+g.cfg.Path), "/")
	repoName := strings.TrimSuffix(path.Base(strings.TrimRight(g.cfg.URL, "/")), ".git")
	var files []File
	err = tree.Files().ForEach(func(f *object.File) error {
		if prefix != "" && f.Name != prefix && !strings.HasPrefix(f.Name, prefix+"/") {
			return nil
		}
		if !spec.IsDefinitionFile(f.Name) || hiddenPath(f.Name) {
			return nil
		}
		s, err := f.Contents()
		if err != nil {
			return err
		}
		files = append(files, File{Name: repoName + ":" + f.Name, Data: []byte(s)})
		return nil
	})
	if err != nil {
		return nil, g.rev, fmt.Errorf("git %s: %w", g.location(), err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	g.rev = head.Hash().String()
	return files, g.rev, nil
}

func hiddenPath(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if strings.HasPrefix(part, ".") {
			return true
		}
	}
	return false
}
