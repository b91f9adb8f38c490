package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/machined"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/config"
)

// TestCLIUsesRunningBerthd: with a berthd answering on --runtime-dir's socket,
// the CLI works through it and on its state directory unless told otherwise;
// an explicit --state-dir that disagrees is an error naming both, never a
// silent switch to local mode (two managers owning the same names).
func TestCLIUsesRunningBerthd(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	p := startBerthd(t)
	dir, runDir, daemonState := filepath.Dir(p.RuntimeDir), p.RuntimeDir, p.StateDir
	otherState := filepath.Join(dir, "other-state")
	defs := filepath.Join(dir, "defs")
	if err := os.MkdirAll(defs, 0o755); err != nil {
		t.Fatal(err)
	}
	img := testenv.UniqueName("img")
	if err := os.WriteFile(filepath.Join(defs, "i.yaml"), []byte("apiVersion: berth/v1\nkind: Image\nname: "+img+"\ndirectory: "+testenv.BusyboxGuest(t)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// No --state-dir: berthd and its state directory.
	if code, out, errs := run(t, "--runtime-dir", runDir, "apply", defs); code != 0 {
		t.Fatalf("apply through berthd = %d:\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(daemonState, "images")); err != nil {
		t.Errorf("the image is not in berthd's state directory: %v", err)
	}
	if code, out, errs := run(t, "--runtime-dir", runDir, "image", "list"); code != 0 || !strings.Contains(out, img) {
		t.Errorf("image list without --state-dir does not show berthd's store = %d:\n%s%s", code, out, errs)
	}
	// The same directory, explicitly: fine.
	if code, out, errs := run(t, "--runtime-dir", runDir, "--state-dir", daemonState, "plan", defs); code != 0 {
		t.Errorf("plan with berthd's own --state-dir = %d:\n%s%s", code, out, errs)
	}
	// Another one: an error that names both, and nothing done locally.
	code, out, errs := run(t, "--runtime-dir", runDir, "--state-dir", otherState, "apply", defs)
	if code != 1 || !strings.Contains(errs, daemonState) || !strings.Contains(errs, otherState) {
		t.Errorf("apply with a --state-dir other than berthd's = %d, want 1 naming both:\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(otherState, "images")); err == nil {
		t.Errorf("apply with another --state-dir wrote into it locally")
	}
}

// startBerthd serves berthd's API in this process, on the socket of a
// runtime directory of its own (--runtime-dir), with a state directory of its
// own, until the test ends; it returns once the API answers.
func startBerthd(t *testing.T) config.Paths {
	t.Helper()
	dir := t.TempDir()
	runDir := filepath.Join(dir, "run")
	p := config.Paths{StateDir: filepath.Join(dir, "berthd-state"), RuntimeDir: runDir, LogDir: filepath.Join(dir, "log"),
		Socket: filepath.Join(runDir, "berthd.sock")}
	for _, d := range []string{runDir, p.LogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m, err := machined.OpenLocal(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- api.Serve(ctx, p.Socket, m) }()
	t.Cleanup(func() { cancel(); <-served })
	// Answering, not only bound: a socket file is there before listen(2),
	// and a CLI that cannot connect works locally (on this host's state).
	testenv.Eventually(t, 5*time.Second, func() error {
		c, err := api.Dial(ctx, p.Socket)
		if err == nil {
			_, err = c.Daemon(ctx)
		}
		return err
	})
	return p
}
