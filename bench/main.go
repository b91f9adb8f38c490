// Command bench measures berth beside systemd-nspawn (and other baselines) on the
// same rootfs in the same run. `make bench` runs every suite; `make bench
// BENCH="boot rootfs"` runs some. Figures go to stdout and bench/out/NAME.json.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"
)

// suite is one benchmark: it prints a human report and returns figures to record.
type suite struct {
	about string
	run   func() (map[string]any, error)
}

// suites is filled by the init functions of the files in this directory, one file
// per area (boot.go, rootfs.go, net.go, reconcile.go, oci.go …).
var suites = map[string]suite{}

func register(name, about string, run func() (map[string]any, error)) {
	suites[name] = suite{about: about, run: run}
}

func main() {
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./bench [SUITE...]\n\nsuites:\n")
		for _, n := range names() {
			fmt.Fprintf(os.Stderr, "  %-12s %s\n", n, suites[n].about)
		}
	}
	flag.Parse()
	// The suites print their own figures; the packages' logs are for warnings.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: must run as root (it boots machines)")
		os.Exit(1)
	}
	want := flag.Args()
	if len(want) == 0 {
		want = names()
	}
	failed := false
	for _, n := range want {
		s, ok := suites[n]
		if !ok {
			fmt.Fprintf(os.Stderr, "bench: no suite %q\n", n)
			os.Exit(1)
		}
		fmt.Printf("== %s: %s\n", n, s.about)
		start := time.Now()
		figs, err := s.run()
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", n, err)
			failed = true
			continue
		}
		figs["suite"] = n
		figs["when"] = start.UTC().Format(time.RFC3339)
		_ = os.MkdirAll("bench/out", 0o755)
		b, _ := json.MarshalIndent(figs, "", "  ")
		_ = os.WriteFile(filepath.Join("bench/out", n+".json"), append(b, '\n'), 0o644)
		fmt.Printf("   (%s, figures in bench/out/%s.json)\n", time.Since(start).Round(time.Millisecond), n)
	}
	if failed {
		os.Exit(1)
	}
}

func names() []string {
	var ns []string
	for n := range suites {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// newWorkDir makes a work directory for suite under /var/tmp and builds the
// named commands of this module (if any) into it; remove removes it again.
func newWorkDir(suite string, binaries ...string) (dir string, remove func(), err error) {
	dir, err = os.MkdirTemp("/var/tmp", "berth-bench-"+suite+"-")
	if err != nil {
		return "", nil, err
	}
	remove = func() { os.RemoveAll(dir) }
	if len(binaries) > 0 {
		if err := buildBinaries(dir, binaries...); err != nil {
			remove()
			return "", nil, err
		}
	}
	return dir, remove, nil
}

// buildBinaries builds the named commands of this module (cmd/NAME) into dir,
// static, as `make build` does, with berth-stage beside them (the stages
// berth and berthd run from when it is there).
func buildBinaries(dir string, names ...string) error {
	names = append(names, "berth-stage")
	args := []string{"build", "-o", dir + "/"}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %v\n%s", names, err, out)
	}
	return nil
}
