package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/machined/config"
)

// fakeBinaries makes a berth, a berthd and a berth-stage in a directory and points install at them.
func fakeBinaries(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"berth", "berthd", "berth-stage"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\necho "+n+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := installSource
	installSource = func() (string, error) { return filepath.Join(dir, "berth"), nil }
	t.Cleanup(func() { installSource = old })
}

// checkDryRun: install --dry-run prints every file and link of p, and writes
// nothing into root.
func checkDryRun(t *testing.T, p *installPlan, root string) {
	t.Helper()
	var dry bytes.Buffer
	if err := p.print(&dry); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# write " + root + "/etc/systemd/system/berthd.service (mode 0644)\n",
		"ExecStart=/opt/b/bin/berthd --config /etc/berth/berthd.yaml\n",
		"# copy ", root + "/opt/b/bin/berthd (mode 0755)", root + "/opt/b/bin/berth-stage (mode 0755)",
		"# ln -s /etc/systemd/system/berthd.service " + root + "/etc/systemd/system/multi-user.target.wants/berthd.service",
		"sources:\n  - path: /etc/berth/machines\n",
	} {
		if !strings.Contains(dry.String(), want) {
			t.Errorf("dry run lacks %q:\n%s", want, dry.String())
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("dry run wrote into the root: %v", entries)
	}
}

func TestInstallUninstallRoot(t *testing.T) {
	fakeBinaries(t)
	root := t.TempDir()
	p, err := planInstall("/opt/b", root)
	if err != nil {
		t.Fatal(err)
	}
	checkDryRun(t, p, root)

	var out bytes.Buffer
	if err := p.apply(&out, true); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"opt/b/bin/berth", "opt/b/bin/berthd", "opt/b/bin/berth-stage", "etc/systemd/system/berthd.service",
		"etc/berth/berthd.yaml", "etc/berth/install.manifest", "etc/berth/machines"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("after install: %v", err)
		}
	}
	for _, tgt := range []string{"multi-user.target", "machines.target"} {
		l, err := os.Readlink(filepath.Join(root, "etc/systemd/system", tgt+".wants", "berthd.service"))
		if err != nil || l != "/etc/systemd/system/berthd.service" {
			t.Errorf("%s link = %q, %v", tgt, l, err)
		}
	}
	// A second install keeps the administrator's configuration.
	cfg := filepath.Join(root, config.DefaultPath)
	if err := os.WriteFile(cfg, []byte("# mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.apply(&out, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(cfg); string(b) != "# mine\n" {
		t.Errorf("reinstall overwrote the configuration: %q", b)
	}
	// Something of the administrator's beside ours must survive uninstall.
	mine := filepath.Join(root, "opt/b/bin/other")
	os.WriteFile(mine, nil, 0o755)

	out.Reset()
	if err := runUninstall(&out, root, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "# rm "+root+"/opt/b/bin/berthd\n") {
		t.Errorf("uninstall dry run:\n%s", out.String())
	}
	if err := runUninstall(&out, root, false); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"opt/b/bin/berth", "opt/b/bin/berthd", "opt/b/bin/berth-stage", "etc/systemd/system/berthd.service",
		"etc/berth/install.manifest", "etc/systemd/system/multi-user.target.wants"} {
		if _, err := os.Lstat(filepath.Join(root, f)); !os.IsNotExist(err) {
			t.Errorf("after uninstall %s: %v", f, err)
		}
	}
	for _, f := range []string{"etc/berth/berthd.yaml", "etc/berth/machines", "opt/b/bin/other"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("uninstall removed what it must keep: %v", err)
		}
	}
	if err := runUninstall(&out, root, false); err == nil || !strings.Contains(err.Error(), "install.manifest is missing") {
		t.Errorf("second uninstall: %v", err)
	}
}

func TestInstallErrors(t *testing.T) {
	fakeBinaries(t)
	if _, err := planInstall("usr/local", ""); err == nil || !strings.Contains(err.Error(), "--prefix") {
		t.Errorf("relative prefix: %v", err)
	}
	if _, err := planInstall("/usr/local", "/nonexistent/root"); err == nil || !strings.Contains(err.Error(), "--root") {
		t.Errorf("missing root: %v", err)
	}
	dir := t.TempDir()
	installSource = func() (string, error) { return filepath.Join(dir, "berth"), nil }
	if _, err := planInstall("/usr/local", t.TempDir()); err == nil || !strings.Contains(err.Error(), "berthd is not next to") {
		t.Errorf("missing berthd: %v", err)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/berth"), 0o755)
	os.WriteFile(filepath.Join(root, installManifest), []byte("file relative/path\n"), 0o644)
	if err := runUninstall(&bytes.Buffer{}, root, false); err == nil || !strings.Contains(err.Error(), "install.manifest:1") {
		t.Errorf("bad manifest: %v", err)
	}
}
