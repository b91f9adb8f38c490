package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
	"golang.org/x/sys/unix"
)

// TestJournalctlArgs: berth logs' flags as journalctl takes them, values
// always after "=" (so --since -1h is no option), matches after "--".
func TestJournalctlArgs(t *testing.T) {
	base := []string{"--no-pager", "--quiet"}
	for _, tc := range []struct {
		name    string
		lf      logsFlags
		matches []string
		json    bool
		want    []string
	}{
		{"default", logsFlags{lines: 200}, nil, false, []string{"--output=short-iso", "--lines=200"}},
		{"json", logsFlags{lines: 200}, nil, true, []string{"--output=json", "--lines=200"}},
		{"-n 5", logsFlags{lines: 5, linesSet: true}, nil, false, []string{"--output=short-iso", "--lines=5"}},
		{"-n 0: all", logsFlags{lines: 0, linesSet: true}, nil, false, []string{"--output=short-iso", "--lines=all"}},
		{"--since: all since", logsFlags{lines: 200, since: "-1h"}, nil, false, []string{"--output=short-iso", "--since=-1h"}},
		{"--since -n 3", logsFlags{lines: 3, linesSet: true, since: "today"}, nil, false, []string{"--output=short-iso", "--lines=3", "--since=today"}},
		{"units, follow, matches", logsFlags{lines: 200, units: []string{"a.service", "b"}, follow: true}, []string{"_PID=1", "+", "_COMM=sshd"}, false,
			[]string{"--output=short-iso", "--lines=200", "--unit=a.service", "--unit=b", "--follow", "--", "_PID=1", "+", "_COMM=sshd"}},
	} {
		if got, want := journalctlArgs(tc.lf, tc.matches, tc.json), append(slices.Clone(base), tc.want...); !slices.Equal(got, want) {
			t.Errorf("%s: journalctlArgs = %q, want %q", tc.name, got, want)
		}
	}
	for _, tc := range []struct {
		lf      logsFlags
		matches []string
	}{
		{logsFlags{lines: -1}, nil},
		{logsFlags{units: []string{"--root=/"}}, nil},
		{logsFlags{units: []string{""}}, nil},
		{logsFlags{}, []string{"--rotate"}},
		{logsFlags{}, []string{"lower=1"}},
		{logsFlags{}, []string{"/usr/bin/sshd"}},
	} {
		if err := checkLogsFlags(tc.lf, tc.matches); err == nil {
			t.Errorf("checkLogsFlags(%+v, %q) accepted", tc.lf, tc.matches)
		}
	}
}

// syncBuffer is a bytes.Buffer that a verb running in a goroutine writes
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogs: berth logs on machines berthd started: a Debian guest's journal
// read inside it while it runs (units, lines, JSON, following), read from
// its root once it is stopped, with the guest's planted links not followed;
// a busybox guest's console, with the note and even with a planted
// journalctl link to the host's; and unknown machines named.
func TestLogs(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	p := startBerthd(t)
	t.Setenv("BERTH_LOG_DIR", p.LogDir)
	rt := "--runtime-dir=" + p.RuntimeDir
	deb, bb := testenv.UniqueName("logs"), testenv.UniqueName("logsbb")
	// A busybox guest with a journalctl link to the host's one: what the
	// guest sees is its own /usr/bin, which has none.
	bbRoot := testenv.CopyTree(t, testenv.BusyboxGuest(t))
	if err := os.Symlink("/usr/bin/journalctl", filepath.Join(bbRoot, "bin/journalctl")); err != nil {
		t.Fatal(err)
	}
	defs := filepath.Join(t.TempDir(), "defs")
	if err := os.MkdirAll(defs, 0o755); err != nil {
		t.Fatal(err)
	}
	def := fmt.Sprintf(`apiVersion: berth/v1
kind: Image
name: deb
directory: %s
---
apiVersion: berth/v1
kind: Image
name: bb
directory: %s
---
apiVersion: berth/v1
kind: Machine
name: %s
image: deb
---
apiVersion: berth/v1
kind: Machine
name: %s
image: bb
`, testenv.DebianGuest(t), bbRoot, deb, bb)
	if err := os.WriteFile(filepath.Join(defs, "m.yaml"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range []string{deb, bb} {
			if c, err := container.Dial(rundir.For(p.RuntimeDir, n).Path()); err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_ = c.Terminate(ctx)
				_, _ = c.Wait(ctx)
				cancel()
			}
		}
	})
	if code, out, errs := run(t, rt, "apply", defs); code != 0 {
		t.Fatalf("apply = %d:\n%s%s", code, out, errs)
	}
	debDir := rundir.For(p.RuntimeDir, deb).Path()
	machinetest.WaitPhase(t, debDir, container.PhaseRunning, 1)
	machinetest.WaitPhase(t, rundir.For(p.RuntimeDir, bb).Path(), container.PhaseRunning, 1)

	journalNote := "-- journal of " + deb + " (inside the machine) --\n"
	var out, errs string
	testenv.Eventually(t, 30*time.Second, func() error {
		var code int
		code, out, errs = run(t, rt, "logs", deb, "-n", "0")
		if code != 0 || errs != journalNote || !strings.Contains(out, "Reached target") {
			return fmt.Errorf("logs %s = %d\nstderr %q\nstdout %s", deb, code, errs, testenv.Tail(out, 2000))
		}
		return nil
	})
	if code, out, errs := run(t, rt, "logs", deb, "-u", "systemd-journald.service", "-n", "0"); code != 0 || out == "" {
		t.Errorf("logs -u = %d %q %q", code, out, errs)
	} else {
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.Contains(strings.ToLower(l), "journal") {
				t.Errorf("logs -u systemd-journald.service has a line of another unit: %q", l)
			}
		}
	}
	start := time.Now()
	if code, out, _ := run(t, rt, "logs", deb); code != 0 || strings.Count(out, "\n") < 20 {
		t.Errorf("logs (the last 200 lines) = %d, %d lines", code, strings.Count(out, "\n"))
	}
	t.Logf("berth logs of the running machine (the last 200 lines, read inside it): %s", time.Since(start).Round(time.Millisecond))
	if code, out, _ := run(t, rt, "logs", deb, "-n", "5"); code != 0 || strings.Count(out, "\n") != 5 {
		t.Errorf("logs -n 5 = %d, %d lines:\n%s", code, strings.Count(out, "\n"), out)
	}
	if code, out, errs := run(t, rt, "-o", "json", "logs", deb, "-n", "3"); code != 0 || strings.Count(out, "\n") != 3 {
		t.Errorf("logs -o json -n 3 = %d %q %q", code, out, errs)
	} else {
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var e map[string]any
			if err := json.Unmarshal([]byte(l), &e); err != nil || e["MESSAGE"] == nil {
				t.Errorf("logs -o json line %q: %v, MESSAGE %v", l, err, e["MESSAGE"])
			}
		}
	}
	if code, _, errs := run(t, rt, "logs", deb, "--console", "-u", "x"); code != 1 || !strings.Contains(errs, "a console log has no fields or times: drop -u") {
		t.Errorf("logs --console -u = %d %q", code, errs)
	}
	if code, out, errs := run(t, rt, "logs", deb, "--console", "-n", "0"); code != 0 || errs != "-- console of "+deb+" --\n" || out == "" {
		t.Errorf("logs --console = %d %q (%d bytes of stdout)", code, errs, len(out))
	}

	// -f: a line logged in the machine appears.
	token := testenv.UniqueName("hello")
	ctx, cancel := context.WithCancel(context.Background())
	var fout, ferr syncBuffer
	followed := make(chan int, 1)
	resetFlags(rootCmd)
	go func() { followed <- executeContext(ctx, []string{rt, "logs", deb, "-f", "-n", "1"}, &fout, &ferr) }()
	testenv.Eventually(t, 30*time.Second, func() error {
		var o bytes.Buffer
		if code, err := container.Enter(context.Background(), debDir, container.EnterOptions{Command: []string{"logger", "-t", "berthtest", token}, Stdout: &o, Stderr: &o}); err != nil || code != 0 {
			return testenv.Stop(fmt.Errorf("logger in the machine = %d %v: %s", code, err, o.String()))
		}
		if !strings.Contains(fout.String(), token) {
			return fmt.Errorf("logs -f did not show %q:\n%s%s", token, fout.String(), ferr.String())
		}
		return nil
	})
	cancel()
	select {
	case <-followed:
	case <-time.After(10 * time.Second):
		t.Fatal("logs -f did not end with its context")
	}

	// Stopped: the persistent journal, from the root.
	if code, out, errs := run(t, rt, "stop", deb); code != 0 {
		t.Fatalf("stop = %d %q %q", code, out, errs)
	}
	testenv.Eventually(t, 60*time.Second, func() error {
		if st, err := container.ReadState(debDir); err == nil && st.SupervisorAlive() {
			return fmt.Errorf("%s still runs: %s", deb, st.Phase)
		}
		return nil
	})
	stoppedNote := "-- journal of " + deb + " (stopped: its persistent journal) --\n"
	start = time.Now()
	if code, out, _ := run(t, rt, "logs", deb); code != 0 || strings.Count(out, "\n") < 20 {
		t.Errorf("logs of the stopped machine (the last 200 lines) = %d, %d lines", code, strings.Count(out, "\n"))
	}
	t.Logf("berth logs of the stopped machine (the last 200 lines, from its root): %s", time.Since(start).Round(time.Millisecond))
	code, out, errs := run(t, rt, "logs", deb, "-n", "0")
	if code != 0 || errs != stoppedNote || !strings.Contains(out, token) || !strings.Contains(out, "Reached target") {
		t.Errorf("logs of the stopped machine = %d\nstderr %q\nstdout %s", code, errs, testenv.Tail(out, 2000))
	}
	if code, out, _ := run(t, rt, "-o", "json", "logs", deb, "-n", "1", "SYSLOG_IDENTIFIER=berthtest"); code != 0 || !strings.Contains(out, `"MESSAGE":"`+token+`"`) || strings.Count(out, "\n") != 1 {
		t.Errorf("logs -o json MATCH of the stopped machine = %d %q", code, out)
	}
	if code, _, errs := run(t, rt, "logs", deb, "-f"); code != 1 || !strings.Contains(errs, "not running") || !strings.Contains(errs, "-f") {
		t.Errorf("logs -f of a stopped machine = %d %q", code, errs)
	}

	// The host's journalctl gets the files as descriptors it can read, and
	// runs as nobody with no capability but reading them.
	fake, err := os.MkdirTemp("/run", "berth-logs-test-") // nobody can reach it, unlike t.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(fake) })
	if err := os.Chmod(fake, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nid -u; grep CapEff /proc/self/status\nfor a; do case $a in --file=*) head -c 8 \"${a#--file=}\"; echo;; esac; done\n"
	if err := os.WriteFile(filepath.Join(fake, "journalctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fake+":"+os.Getenv("PATH"))
	code, out, errs = run(t, rt, "logs", deb)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) < 3 || lines[0] != "65534" ||
		lines[1] != "CapEff:\t0000000000000004" || slices.ContainsFunc(lines[2:], func(l string) bool { return l != "LPKSHHRH" }) {
		t.Errorf("the host's journalctl as berth runs it = %d\nstdout %q\nstderr %q\nwant uid 65534, CAP_DAC_READ_SEARCH only, journal files", code, out, errs)
	}
	t.Setenv("PATH", strings.TrimPrefix(os.Getenv("PATH"), fake+":"))

	// The guest replaced its journal with links to host files: none is read.
	upper := filepath.Join(p.StateDir, "machines", deb, "upper")
	ids, _ := os.ReadDir(filepath.Join(upper, "var/log/journal"))
	if len(ids) != 1 {
		t.Fatalf("journal directories in %s: %v", upper, ids)
	}
	idDir := filepath.Join(upper, "var/log/journal", ids[0].Name())
	host := filepath.Join(t.TempDir(), "host-journal")
	if err := os.Rename(idDir, host); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(idDir, 0o755); err != nil {
		t.Fatal(err)
	}
	hostFiles, _ := filepath.Glob(filepath.Join(host, "*.journal"))
	if len(hostFiles) == 0 {
		t.Fatalf("no journal files in %s", host)
	}
	for i, target := range append(hostFiles, "/etc/shadow") {
		if err := os.Symlink(target, filepath.Join(idDir, fmt.Sprintf("x%d.journal", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(host, filepath.Join(upper, "var/log/journal", strings.Repeat("a", 32))); err != nil {
		t.Fatal(err)
	}
	code, out, errs = run(t, rt, "logs", deb, "-n", "0")
	if code != 0 || strings.Contains(out, token) || strings.Contains(errs, "-- journal of") || strings.Count(errs, "not followed") != 3 ||
		!strings.Contains(errs, "-- console of "+deb+": "+deb+" is stopped and has no persistent journal --") {
		t.Errorf("logs with the journal replaced by links to host files = %d\nstderr %q\nstdout %s", code, errs, testenv.Tail(out, 2000))
	}

	// Only a volatile journal (no /var/log/journal: a whiteout over the
	// image's): read inside while the machine runs, gone once it stops.
	if err := os.RemoveAll(filepath.Join(upper, "var/log/journal")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(upper, "var/log/journal"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := run(t, rt, "start", deb); code != 0 {
		t.Fatalf("start = %d %q %q", code, out, errs)
	}
	testenv.Eventually(t, machinetest.Timeout, func() error {
		if st, err := container.ReadState(debDir); err != nil || !st.SupervisorAlive() || st.Phase != container.PhaseRunning {
			return fmt.Errorf("%s is not running again: %+v %v", deb, st, err)
		}
		return nil
	})
	testenv.Eventually(t, 30*time.Second, func() error {
		code, out, errs := run(t, rt, "logs", deb, "-n", "0", "_PID=1")
		if code != 0 || errs != journalNote || !strings.Contains(out, "Reached target") || strings.Contains(out, token) {
			return fmt.Errorf("logs of a machine with a volatile journal = %d\nstderr %q\nstdout %s", code, errs, testenv.Tail(out, 2000))
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(upper, "var/log/journal")); err == nil {
		if fi, _ := os.Lstat(filepath.Join(upper, "var/log/journal")); fi.Mode()&os.ModeCharDevice == 0 {
			t.Fatalf("the guest made /var/log/journal again: %v", fi.Mode())
		}
	}
	if code, out, errs := run(t, rt, "stop", deb); code != 0 {
		t.Fatalf("stop = %d %q %q", code, out, errs)
	}
	testenv.Eventually(t, 60*time.Second, func() error {
		if st, err := container.ReadState(debDir); err == nil && st.SupervisorAlive() {
			return fmt.Errorf("%s still runs: %s", deb, st.Phase)
		}
		return nil
	})
	if code, _, errs := run(t, rt, "logs", deb); code != 0 || errs != "-- console of "+deb+": "+deb+" is stopped and has no persistent journal --\n" {
		t.Errorf("logs of a stopped machine whose journal was volatile = %d %q", code, errs)
	}

	// busybox: the console (where berthd writes it, whatever the CLI's log
	// directory), said so; journal-only flags refused.
	t.Setenv("BERTH_LOG_DIR", filepath.Join(p.LogDir, "not-here"))
	code, out, errs = run(t, rt, "logs", bb)
	if code != 0 || errs != "-- console of "+bb+": "+bb+" has no journal --\n" || out == "" {
		t.Errorf("logs of a busybox guest = %d %q %q", code, errs, out)
	}
	if code, _, errs := run(t, rt, "logs", bb, "--since", "-1h"); code != 1 || !strings.Contains(errs, bb) || !strings.Contains(errs, "--since") {
		t.Errorf("logs --since of a busybox guest = %d %q", code, errs)
	}

	// Unknown machines are named, a stopped one said to be.
	if code, _, errs := run(t, rt, "shell", deb, "true"); code != 1 || !strings.Contains(errs, fmt.Sprintf("machine %q is not running", deb)) {
		t.Errorf("shell of a stopped machine = %d %q", code, errs)
	}
	if code, _, errs := run(t, rt, "shell", "nosuch", "true"); code != 1 || !strings.Contains(errs, `"nosuch"`) || !strings.Contains(errs, "not found") {
		t.Errorf("shell nosuch = %d %q", code, errs)
	}
	if code, _, errs := run(t, rt, "logs", "nosuch"); code != 1 || !strings.Contains(errs, `"nosuch"`) || !strings.Contains(errs, "not found") {
		t.Errorf("logs nosuch = %d %q", code, errs)
	}
	if code, _, errs := run(t, rt, "logs", "-bad/name"); code != 1 || errs == "" {
		t.Errorf("logs -bad/name = %d %q", code, errs)
	}
}
