package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/units"
)

// installManifest lists, inside the target root, every path `berth install`
// wrote, so `berth uninstall` removes exactly those and nothing else.
const installManifest = "/etc/berth/install.manifest"

func newInstallCmd() *cobra.Command {
	var dryRun, noStart bool
	var prefix, root string
	c := &cobra.Command{
		Use:   "install",
		Short: "Install berth, berthd and berth-stage, berthd.service, and a default configuration",
		Long: `install copies berth, berthd and berth-stage (from the directory of the running berth) to
PREFIX/bin, writes berthd.service to /etc/systemd/system, writes
/etc/berth/berthd.yaml when there is none, and, when systemd runs the host,
reloads systemd and enables and starts berthd. With --root DIR everything is
written below DIR (an image or a test host) and systemd is not touched; the
service is enabled with the same links systemctl enable makes.

--dry-run prints every file and action instead. berth uninstall removes exactly
what install wrote; configuration and machine data stay.`,
		Example: `  berth install --dry-run
  berth install
  berth install --root /srv/image --prefix /usr`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := planInstall(prefix, root)
			if err != nil {
				return err
			}
			if dryRun {
				return p.print(cmd.OutOrStdout())
			}
			return p.apply(cmd.OutOrStdout(), !noStart)
		},
	}
	installFlags(c, &dryRun, &root)
	c.Flags().StringVar(&prefix, "prefix", "/usr/local", "install the binaries to `PREFIX`/bin")
	c.Flags().BoolVar(&noStart, "no-start", false, "enable berthd.service but do not start it now")
	return c
}

func newUninstallCmd() *cobra.Command {
	var dryRun bool
	var root string
	c := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove what berth install wrote (configuration and machines stay)",
		Long: `uninstall stops and disables berthd.service when systemd runs the host, then
removes the files berth install recorded in /etc/berth/install.manifest: the
binaries, the unit file and its enablement links. /etc/berth (configuration,
definitions) and /var/lib/berth (machine roots, images) are kept. Machines that
are running keep running, in their own scopes; stop them first if they should not.`,
		Example: `  berth uninstall --dry-run
  berth uninstall`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runUninstall(cmd.OutOrStdout(), root, dryRun)
		},
	}
	installFlags(c, &dryRun, &root)
	return c
}

// installFlags are the flags install and uninstall share.
func installFlags(c *cobra.Command, dryRun *bool, root *string) {
	c.Flags().BoolVar(dryRun, "dry-run", false, "print what would be done, change nothing")
	c.Flags().StringVar(root, "root", "", "operate on the root file system at `DIR` instead of this host (systemd is not called)")
}

// installFile is one file install writes. Paths are as seen inside the target root.
type installFile struct {
	path     string
	mode     os.FileMode
	content  []byte // or:
	source   string // a file to copy (the binaries)
	ifAbsent bool   // configuration: never overwritten, never removed by uninstall
}

// installSource is the berth binary to install; berthd and berth-stage are
// taken from its directory. Tests point it elsewhere.
var installSource = os.Executable

type installLink struct{ path, target string }

type installPlan struct {
	root    string
	files   []installFile
	dirs    []string // created if absent, never removed
	links   []installLink
	systemd bool // call systemctl (systemd runs this host and no --root)
}

func planInstall(prefix, root string) (*installPlan, error) {
	if !filepath.IsAbs(prefix) {
		return nil, fmt.Errorf("--prefix %q: must be an absolute path such as /usr/local", prefix)
	}
	if root != "" {
		fi, err := os.Stat(root)
		if err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("--root %q: not a directory", root)
		}
	}
	self, err := installSource()
	if err != nil {
		return nil, fmt.Errorf("install: find the running berth binary: %w", err)
	}
	self, _ = filepath.EvalSymlinks(self)
	bindir := filepath.Dir(self)
	var besides []installFile
	for _, name := range []string{"berthd", container.StageBinary} {
		path := filepath.Join(bindir, name)
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("install: %s is not next to this berth (%s): build all three first (make build) and run bin/berth install", name, path)
		}
		besides = append(besides, installFile{path: filepath.Join(prefix, "bin", name), mode: 0o755, source: path})
	}
	unitFiles, err := units.UnitFiles(units.Install{Prefix: prefix, ConfigPath: config.DefaultPath})
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	p := &installPlan{root: root, systemd: root == "" && units.Booted()}
	p.files = append(append(p.files, installFile{path: filepath.Join(prefix, "bin", "berth"), mode: 0o755, source: self}), besides...)
	for _, u := range unitFiles {
		path := filepath.Join(units.UnitDir, u.Name)
		p.files = append(p.files, installFile{path: path, mode: 0o644, content: []byte(u.Content)})
		if !p.systemd {
			// What `systemctl enable` would make from the [Install] section.
			for _, t := range u.WantedBy {
				p.links = append(p.links, installLink{path: filepath.Join(units.UnitDir, t+".wants", u.Name), target: path})
			}
		}
	}
	p.files = append(p.files, installFile{path: config.DefaultPath, mode: 0o644,
		content: []byte(config.DefaultYAML), ifAbsent: true})
	p.dirs = []string{"/etc/berth/machines"}
	return p, nil
}

// at maps a path inside the target root to this host's view of it.
func (p *installPlan) at(path string) string { return filepath.Join("/", p.root, path) }

func (p *installPlan) print(w io.Writer) error {
	for _, f := range p.files {
		switch {
		case f.source != "":
			fmt.Fprintf(w, "# copy %s to %s (mode %04o)\n", f.source, p.at(f.path), f.mode)
		case f.ifAbsent:
			if _, err := os.Stat(p.at(f.path)); err == nil {
				fmt.Fprintf(w, "# keep %s (exists)\n", p.at(f.path))
				continue
			}
			fmt.Fprintf(w, "# write %s (mode %04o, only when absent)\n%s", p.at(f.path), f.mode, f.content)
		default:
			fmt.Fprintf(w, "# write %s (mode %04o)\n%s", p.at(f.path), f.mode, f.content)
		}
	}
	for _, d := range p.dirs {
		fmt.Fprintf(w, "# mkdir -p %s\n", p.at(d))
	}
	for _, l := range p.links {
		fmt.Fprintf(w, "# ln -s %s %s\n", l.target, p.at(l.path))
	}
	fmt.Fprintf(w, "# write %s (the list of installed files, for berth uninstall)\n", p.at(installManifest))
	if p.systemd {
		fmt.Fprintf(w, "# systemctl daemon-reload\n# systemctl enable --now %s\n", units.BerthdUnit)
	}
	return nil
}

// apply writes every file. Each is written to a temporary file next to its
// target first; only when all are staged are they renamed into place, so a
// failure (a full disk, a read-only /usr) leaves the previous installation as it
// was.
func (p *installPlan) apply(w io.Writer, start bool) error {
	done, err := p.stageAll()
	if err != nil {
		return err
	}
	for _, s := range done {
		if err := os.Rename(s.tmp, s.dst); err != nil {
			removeStaged(done)
			return fmt.Errorf("install: %w", err)
		}
		fmt.Fprintf(w, "installed %s\n", s.dst)
	}
	for _, d := range p.dirs {
		if err := os.MkdirAll(p.at(d), 0o755); err != nil {
			return fmt.Errorf("install: %w", err)
		}
	}
	if err := p.enable(w); err != nil {
		return err
	}
	if !p.systemd {
		return nil
	}
	if err := systemctl(w, "daemon-reload"); err != nil {
		return err
	}
	args := []string{"enable", units.BerthdUnit}
	if start {
		args = []string{"enable", "--now", units.BerthdUnit}
	}
	if err := systemctl(w, args...); err != nil {
		return fmt.Errorf("%w (the files are installed; see journalctl -u %s)", err, units.BerthdUnit)
	}
	return nil
}

// staged is a file written beside its destination, to be renamed over it.
type staged struct{ tmp, dst string }

// stageAll writes every file to be installed, and the manifest that lists them,
// to temporary files beside their destinations. On failure it removes what it
// staged.
func (p *installPlan) stageAll() (done []staged, err error) {
	defer func() {
		if err != nil {
			removeStaged(done)
		}
	}()
	var manifest []string
	for _, f := range p.files {
		dst := p.at(f.path)
		if f.ifAbsent {
			if _, err := os.Lstat(dst); err == nil {
				continue
			}
		} else {
			manifest = append(manifest, "file "+f.path)
		}
		data := f.content
		if f.source != "" {
			if same(f.source, dst) {
				continue // reinstalling the binary that runs: already in place
			}
			if data, err = os.ReadFile(f.source); err != nil {
				return done, fmt.Errorf("install: %w", err)
			}
		}
		tmp, err := stage(dst, data, f.mode)
		if err != nil {
			return done, fmt.Errorf("install: %s: %w", dst, err)
		}
		done = append(done, staged{tmp, dst})
	}
	for _, l := range p.links {
		manifest = append(manifest, "link "+l.path)
	}
	sort.Strings(manifest[2:]) // binaries first, then in a stable order
	mtmp, err := stage(p.at(installManifest), []byte("# Written by berth install: what berth uninstall removes.\n"+strings.Join(manifest, "\n")+"\n"), 0o644)
	if err != nil {
		return done, fmt.Errorf("install: %s: %w", p.at(installManifest), err)
	}
	return append(done, staged{mtmp, p.at(installManifest)}), nil
}

func removeStaged(done []staged) {
	for _, s := range done {
		os.Remove(s.tmp)
	}
}

// enable makes the links of the service's enablement, as systemctl enable
// would (where systemd is not called).
func (p *installPlan) enable(w io.Writer) error {
	for _, l := range p.links {
		dst := p.at(l.path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("install: %w", err)
		}
		if cur, err := os.Readlink(dst); err == nil && cur == l.target {
			continue
		}
		os.Remove(dst)
		if err := os.Symlink(l.target, dst); err != nil {
			return fmt.Errorf("install: enable %s: %w", units.BerthdUnit, err)
		}
		fmt.Fprintf(w, "enabled %s\n", dst)
	}
	return nil
}

func runUninstall(w io.Writer, root string, dryRun bool) error {
	mpath := filepath.Join("/", root, installManifest)
	data, err := os.ReadFile(mpath)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("uninstall: no berth installation recorded (%s is missing)", mpath)
	} else if err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	var paths []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kind, path, ok := strings.Cut(line, " ")
		if !ok || (kind != "file" && kind != "link") || !filepath.IsAbs(path) || filepath.Clean(path) != path {
			return fmt.Errorf("uninstall: %s:%d: %q is not a line berth install writes (file PATH or link PATH)", mpath, n, line)
		}
		paths = append(paths, path)
	}
	useSystemd := root == "" && units.Booted()
	if dryRun {
		if useSystemd {
			fmt.Fprintf(w, "# systemctl disable --now %s\n", units.BerthdUnit)
		}
		for _, p := range paths {
			fmt.Fprintf(w, "# rm %s\n", filepath.Join("/", root, p))
		}
		fmt.Fprintf(w, "# rm %s\n", mpath)
		if useSystemd {
			fmt.Fprintln(w, "# systemctl daemon-reload")
		}
		return nil
	}
	if useSystemd {
		if err := systemctl(w, "disable", "--now", units.BerthdUnit); err != nil {
			return err
		}
	}
	var errs []error
	for _, p := range append(paths, installManifest) {
		full := filepath.Join("/", root, p)
		if err := os.Remove(full); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(w, "removed %s\n", full)
		// An enablement directory that only held our link goes too.
		if strings.HasSuffix(filepath.Dir(p), ".wants") {
			_ = os.Remove(filepath.Dir(full))
		}
	}
	if useSystemd {
		if err := systemctl(w, "daemon-reload"); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("uninstall: %w", errors.Join(errs...))
	}
	return nil
}

// stage writes data to a temporary file in dst's directory (created if needed)
// and syncs it, ready to be renamed over dst.
func stage(dst string, data []byte, mode os.FileMode) (string, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func same(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

func systemctl(w io.Writer, args ...string) error {
	fmt.Fprintf(w, "systemctl %s\n", strings.Join(args, " "))
	out, err := exec.Command("systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
