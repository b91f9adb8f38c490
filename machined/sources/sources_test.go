package sources

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/machined/config"
)

const image = "apiVersion: berth/v1\nkind: Image\nname: base\ndebootstrap: {suite: bookworm}\n"

func machine(name string) string {
	return "apiVersion: berth/v1\nkind: Machine\nname: " + name + "\nimage: base\n"
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoad: a watched directory and an applied snapshot are one set, so a
// name declared in both is an error naming both files; `berth plan PATH`'s
// snapshot stands in for the stored one of its path; a configured directory
// that does not exist yet declares nothing but says so.
func TestLoad(t *testing.T) {
	state, dir, applied := t.TempDir(), t.TempDir(), t.TempDir()
	missing := filepath.Join(t.TempDir(), "later")
	write(t, filepath.Join(dir, "image.yaml"), image)
	write(t, filepath.Join(dir, "sub", "web.yaml"), machine("web"))
	write(t, filepath.Join(dir, ".hidden", "x.yaml"), "not: [yaml")
	s := New(&config.Config{StateDir: state, Sources: []config.SourceConfig{{Path: dir}, {Path: missing}}})
	ctx := context.Background()

	set, errs := s.Load(ctx, nil)
	if errs != nil || len(set.Machines) != 1 || set.Machines[0].Name != "web" {
		t.Fatalf("Load = %v, %v", set, errs)
	}
	infos := s.Infos()
	if len(infos) != 2 || infos[0].Error != "" || infos[1].Location != missing || infos[1].Error != "does not exist" {
		t.Errorf("Infos = %+v", infos)
	}

	write(t, filepath.Join(applied, "db.yaml"), machine("db"))
	sn, err := ReadSnapshot(applied)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSnapshot(*sn); err != nil {
		t.Fatal(err)
	}
	if set, errs = s.Load(ctx, nil); errs != nil || len(set.Machines) != 2 {
		t.Fatalf("with the snapshot: %v, %v", set, errs)
	}
	// Edits under the applied path change nothing until it is applied again.
	write(t, filepath.Join(applied, "db.yaml"), machine("web"))
	if _, errs = s.Load(ctx, nil); errs != nil {
		t.Fatalf("an unapplied edit was read: %v", errs)
	}
	// ... but the plan of that path reads them, and sees the clash.
	next, err := ReadSnapshot(applied)
	if err != nil {
		t.Fatal(err)
	}
	_, errs = s.Load(ctx, next)
	if len(errs) != 1 || !strings.Contains(errs[0], filepath.Join(applied, "db.yaml")) || !strings.Contains(errs[0], "web") {
		t.Errorf("a name declared twice: %v", errs)
	}

	if ok, err := s.ForgetSnapshot(applied); !ok || err != nil {
		t.Errorf("ForgetSnapshot = %v, %v", ok, err)
	}
	if ok, _ := s.ForgetSnapshot(applied); ok {
		t.Error("a forgotten snapshot was forgotten twice")
	}
	if set, _ = s.Load(ctx, nil); len(set.Machines) != 1 {
		t.Errorf("after forgetting: %d machines", len(set.Machines))
	}

	if !s.IsWatchedDir(filepath.Join(dir, "sub")) || s.IsWatchedDir(applied) || s.IsWatchedDir(dir+"-other") {
		t.Error("IsWatchedDir is wrong")
	}
	if _, err := ReadSnapshot(filepath.Join(dir, "nope")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("ReadSnapshot of a missing path: %v", err)
	}
}

// TestWatchDirs: a file written under a watched directory, even in a
// subdirectory made after the watch began, or the configured directory
// appearing later, is reported once the writes settle.
func TestWatchDirs(t *testing.T) {
	dir := t.TempDir()
	later := filepath.Join(t.TempDir(), "later")
	s := New(&config.Config{StateDir: t.TempDir(), Sources: []config.SourceConfig{{Path: dir}, {Path: later}}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 16)
	w, err := s.WatchDirs(ctx, func() { changed <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	await := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s was not reported", what)
		}
	}
	write(t, filepath.Join(dir, "web.yaml"), machine("web"))
	await("a new file")
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	await("a new directory")
	write(t, filepath.Join(dir, "sub", "db.yaml"), machine("db"))
	await("a file in the new directory")
	if err := os.Mkdir(later, 0o755); err != nil {
		t.Fatal(err)
	}
	await("the configured directory appearing")

	none := New(&config.Config{StateDir: t.TempDir()})
	if w, err := none.WatchDirs(ctx, func() {}); err != nil || w.Close() != nil {
		t.Errorf("no directories to watch: %v", err)
	}
}

// TestGitInterval: the shortest interval a repository asks for, an hour
// without any.
func TestGitInterval(t *testing.T) {
	if iv := New(&config.Config{}).GitInterval(); iv != time.Hour {
		t.Errorf("no Git sources: %v", iv)
	}
	s := New(&config.Config{StateDir: t.TempDir(), Sources: []config.SourceConfig{
		{Git: &config.GitSource{URL: "/a", Interval: config.Duration(5 * time.Minute)}},
		{Git: &config.GitSource{URL: "/b", Interval: config.Duration(30 * time.Second)}},
	}})
	if iv := s.GitInterval(); iv != 30*time.Second {
		t.Errorf("GitInterval = %v", iv)
	}
}
