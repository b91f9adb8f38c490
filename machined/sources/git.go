package sources

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

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
