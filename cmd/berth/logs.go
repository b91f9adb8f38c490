package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/rootfs"
)

// logsFlags are berth logs' flags.
type logsFlags struct {
	console, follow bool
	lines           int
	linesSet        bool // -n was given (the journal's default depends on --since)
	units           []string
	since           string
}

func newLogsCmd() *cobra.Command {
	var lf logsFlags
	c := &cobra.Command{
		Use:   "logs NAME [MATCH...]",
		Short: "Print a machine's journal (the guest's own), or its console log; -f follows",
		Long: `logs prints the journal of a machine whose guest keeps one (systemd), as
journalctl -M does for nspawn machines, and otherwise its console log. One
line on stderr says which (stdout has only the log):

  -- journal of web (inside the machine) --
  -- console of web: web has no journal --

A running machine's journal is read by the guest's own journalctl, run in the
machine as berth shell runs a command, so the guest's files are parsed only
by the guest. A stopped machine's persistent journal (/var/log/journal in its
root) is read by this host's journalctl (package systemd), from files opened
inside the root: a symbolic link the guest made is never followed. A volatile
journal (/run/log/journal) ends with the machine. MATCHes are journalctl's
FIELD=VALUE matches ("+" between them: or).

--console prints the console log instead (/var/log/berth/NAME.console.log, or
where berthd's logDir has it).
Without -n, the last 200 lines are printed (the journal's: all of them since
--since, when given); -n 0 prints all. -o json prints the journal as
journalctl -o json does: one object per line.`,
		Example: `  berth logs web
  berth logs web -u nginx.service -n 50
  berth logs web --since -1h -o json
  berth logs web -f
  berth logs web _PID=1
  berth logs web --console -f`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeMachine,
		RunE: func(cmd *cobra.Command, args []string) error {
			lf.linesSet = cmd.Flags().Changed("lines")
			return showLogs(cmd, args[0], args[1:], lf)
		},
	}
	f := c.Flags()
	f.BoolVar(&lf.console, "console", false, "print the console log, not the journal")
	f.BoolVarP(&lf.follow, "follow", "f", false, "keep printing what is logged")
	f.IntVarP(&lf.lines, "lines", "n", 200, "how many of the last lines to print first (0: all)")
	f.StringArrayVarP(&lf.units, "unit", "u", nil, "only this systemd unit's messages (repeatable; journal only)")
	f.StringVar(&lf.since, "since", "", `only entries since this time, as journalctl takes it: "2025-01-02 10:00", "-1h", "today" (journal only)`)
	return c
}

// journalctlPaths are where a guest with a journal has journalctl.
var journalctlPaths = []string{"/usr/bin/journalctl", "/bin/journalctl"}

// showLogs prints the log of machine name that lf asks for: the journal of a
// running machine (from inside it), of a stopped one (from its root), or its
// console log.
func showLogs(cmd *cobra.Command, name string, matches []string, lf logsFlags) error {
	runDir, err := machineRunDir(name)
	if err != nil {
		return err
	}
	if err := checkLogsFlags(lf, matches); err != nil {
		return err
	}
	jsonOut := outputOf(cmd).json
	if lf.console {
		if err := consoleFlags(name, "--console asks for its console log", lf, matches, jsonOut); err != nil {
			return err
		}
		return printConsole(cmd, name, "", lf)
	}
	args := journalctlArgs(lf, matches, jsonOut)
	switch has, err := guestHasJournal(runDir); {
	case errors.Is(err, container.ErrNotRunning):
	case err != nil:
		return fmt.Errorf("machine %q: %w", name, err)
	case !has:
		return consoleInstead(cmd, name, name+" has no journal", lf, matches, jsonOut)
	default:
		fmt.Fprintf(cmd.ErrOrStderr(), "-- journal of %s (inside the machine) --\n", name)
		code, err := guestJournal(cmd, runDir, args)
		if !errors.Is(err, container.ErrNotRunning) {
			return exitStatus(code, err)
		}
		// It stopped meanwhile: its root has what it wrote.
	}
	return stoppedJournal(cmd, name, lf, matches, args, jsonOut)
}

// guestHasJournal says whether the running machine of runDir keeps a journal:
// it has journalctl, and its init is systemd, or a journal is in /run (a
// guest journald started otherwise). An application on a Debian image has
// journalctl and an empty journal: its console is what it printed.
func guestHasJournal(runDir string) (bool, error) {
	st, err := container.ReadState(runDir)
	if err != nil {
		return false, fmt.Errorf("%s: %w", runDir, container.ErrNotRunning)
	}
	has, err := container.MachineHas(runDir, journalctlPaths...)
	if err != nil || !has || st.Init == "systemd" {
		return has, err
	}
	return container.MachineHas(runDir, "/run/log/journal")
}

// guestJournal runs the guest's own journalctl with args in the running
// machine of runDir, as the guest's root, with its output on berth's.
func guestJournal(cmd *cobra.Command, runDir string, args []string) (int, error) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	return container.Enter(cmd.Context(), runDir, container.EnterOptions{
		Command: append([]string{"journalctl"}, args...),
		Stdout:  cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(), Signals: sigs,
	})
}

// stoppedJournal prints the persistent journal of the stopped machine name
// with this host's journalctl, from the files in its root; without one, its
// console log.
func stoppedJournal(cmd *cobra.Command, name string, lf logsFlags, matches, args []string, jsonOut bool) error {
	s, err := openStore()
	if err != nil {
		return err
	}
	rd, err := s.ReadRoot(name)
	if errors.Is(err, rootfs.ErrNotFound) {
		return consoleInstead(cmd, name, name+" has no root here", lf, matches, jsonOut)
	}
	if err != nil {
		return err
	}
	defer rd.Close()
	files := journalFiles(cmd.ErrOrStderr(), rd)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if len(files) == 0 {
		return consoleInstead(cmd, name, name+" is stopped and has no persistent journal", lf, matches, jsonOut)
	}
	if lf.follow {
		return fmt.Errorf("machine %q is not running: -f follows a running machine's journal (berth logs --console -f %s follows its console)", name, name)
	}
	journalctl, err := exec.LookPath("journalctl")
	if err != nil {
		return fmt.Errorf("machine %q is stopped: reading its journal needs journalctl on this host (package systemd); berth logs --console %s prints its console log", name, name)
	}
	// The files go to journalctl as inherited descriptors (3, 4, …), opened
	// here inside the root: no path the guest controls reaches it.
	var fileArgs []string
	for i := range files {
		fileArgs = append(fileArgs, "--file=/proc/self/fd/"+strconv.Itoa(3+i))
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "-- journal of %s (stopped: its persistent journal) --\n", name)
	jc := exec.CommandContext(cmd.Context(), journalctl, append(fileArgs, args...)...)
	jc.ExtraFiles = files
	jc.Stdout, jc.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
	// The files are the guest's making: journalctl parses them as nobody,
	// with only the capability to read what it is given (it reopens
	// /proc/self/fd/N, which checks the file's mode again): a flaw in its
	// parser does not hand a guest the host's root.
	jc.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
		AmbientCaps: []uintptr{unix.CAP_DAC_READ_SEARCH},
	}
	err = jc.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &exitError{code: ee.ExitCode()}
	}
	return err
}

// nobody is the overflow user and group: no one's files.
const nobody = 65534

// journalDir is where journald keeps a persistent journal: a directory per
// machine ID, of *.journal files (*.journal~: ones it found unclean).
const journalDir = "/var/log/journal"

// maxJournalFiles bounds how many files of a guest's journal are read (a
// guest can make millions); journald keeps far fewer.
const maxJournalFiles = 1000

var machineIDDir = regexp.MustCompile(`^[0-9a-f]{32}$`)

// journalFiles opens the journal files in the root of rd: regular files only
// (a symbolic link, FIFO or device the guest put there is skipped, with a
// warning on warn).
func journalFiles(warn io.Writer, rd *rootfs.RootReader) []*os.File {
	ids, _ := rd.ReadDir(journalDir, maxJournalFiles)
	var files []*os.File
	for _, id := range ids {
		if !machineIDDir.MatchString(id) {
			continue
		}
		names, err := rd.ReadDir(journalDir+"/"+id, maxJournalFiles)
		if err != nil {
			fmt.Fprintf(warn, "berth: warning: skipped %s/%s: %s\n", journalDir, id, notFollowed(err))
			continue
		}
		for _, n := range names {
			if !strings.HasSuffix(n, ".journal") && !strings.HasSuffix(n, ".journal~") {
				continue
			}
			if len(files) == maxJournalFiles {
				fmt.Fprintf(warn, "berth: warning: only the first %d journal files are read\n", maxJournalFiles)
				return files
			}
			p := journalDir + "/" + id + "/" + n
			f, err := rd.Open(p)
			if err != nil {
				fmt.Fprintf(warn, "berth: warning: skipped %s: %s\n", p, notFollowed(err))
				continue
			}
			files = append(files, f)
		}
	}
	return files
}

// notFollowed says why a file of a guest's journal was skipped: what
// RootReader refused.
func notFollowed(err error) string {
	switch {
	case errors.Is(err, unix.ELOOP):
		return "a symbolic link, not followed"
	case errors.Is(err, unix.ENOTDIR):
		return "not a directory (a symbolic link is not followed)"
	}
	if err := errors.Unwrap(err); err != nil {
		return err.Error()
	}
	return err.Error()
}

// matchArg is a journalctl match: FIELD=VALUE, or "+" (or).
var matchArg = regexp.MustCompile(`^(\+|[A-Z_][A-Z0-9_]*=.*)$`)

// checkLogsFlags refuses what journalctl or the console could not take.
func checkLogsFlags(lf logsFlags, matches []string) error {
	if lf.lines < 0 {
		return fmt.Errorf("-n %d: give a number of lines, 0 for all", lf.lines)
	}
	for _, u := range lf.units {
		if u == "" || strings.HasPrefix(u, "-") {
			return fmt.Errorf("-u %q: give a unit name", u)
		}
	}
	for _, m := range matches {
		if !matchArg.MatchString(m) {
			return fmt.Errorf("%q: a journal match is FIELD=VALUE (FIELD in capitals, as _PID=1 or SYSLOG_IDENTIFIER=sshd) or + between matches", m)
		}
	}
	return nil
}

// journalctlArgs are journalctl's arguments for berth logs' flags: no pager,
// no notices on stdout (scripts read only the log there), times in ISO 8601
// or JSON, and only long options with their values after "=", so no value
// is read as an option.
func journalctlArgs(lf logsFlags, matches []string, jsonOut bool) []string {
	a := []string{"--no-pager", "--quiet", "--output=short-iso"}
	if jsonOut {
		a[2] = "--output=json"
	}
	switch {
	case lf.linesSet && lf.lines == 0:
		a = append(a, "--lines=all")
	case lf.linesSet || lf.since == "":
		a = append(a, "--lines="+strconv.Itoa(lf.lines))
	}
	if lf.since != "" {
		a = append(a, "--since="+lf.since)
	}
	for _, u := range lf.units {
		a = append(a, "--unit="+u)
	}
	if lf.follow {
		a = append(a, "--follow")
	}
	if len(matches) > 0 {
		a = append(append(a, "--"), matches...)
	}
	return a
}

// consoleFlags refuses the journal's flags for a console log (why: what
// chose the console).
func consoleFlags(name, why string, lf logsFlags, matches []string, jsonOut bool) error {
	var journalOnly []string
	if len(lf.units) > 0 {
		journalOnly = append(journalOnly, "-u")
	}
	if lf.since != "" {
		journalOnly = append(journalOnly, "--since")
	}
	if len(matches) > 0 {
		journalOnly = append(journalOnly, "matches")
	}
	if jsonOut {
		journalOnly = append(journalOnly, "-o json")
	}
	if len(journalOnly) == 0 {
		return nil
	}
	return fmt.Errorf("machine %q: %s, and a console log has no fields or times: drop %s", name, why, strings.Join(journalOnly, ", "))
}

// consoleInstead prints the console log of a machine whose journal cannot
// be read, saying why.
func consoleInstead(cmd *cobra.Command, name, why string, lf logsFlags, matches []string, jsonOut bool) error {
	if err := consoleFlags(name, why, lf, matches, jsonOut); err != nil {
		return err
	}
	return printConsole(cmd, name, why, lf)
}

// printConsole prints machine name's console log, after a line on stderr
// that says so (and why, when it stands in for the journal).
func printConsole(cmd *cobra.Command, name, why string, lf logsFlags) error {
	p := consoleLogPath(name)
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) && !lf.follow {
		return unknownOr(cmd.Context(), name, fmt.Errorf("machine %q has never run here: it has no journal and no console log", name))
	}
	if why != "" {
		why = ": " + why
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "-- console of %s%s --\n", name, why)
	return printLog(cmd, p, lf.lines, lf.follow)
}

// consoleLogPath is where machine name's console log is: where its
// supervisor writes it (its config.json, as berthd's logDir placed it), or
// else in the log directory.
func consoleLogPath(name string) string {
	var cfg container.Config
	if b, err := os.ReadFile(rundir.For(cliPaths().RuntimeDir, name).Config()); err == nil &&
		json.Unmarshal(b, &cfg) == nil && filepath.IsAbs(cfg.ConsoleLog) {
		return cfg.ConsoleLog
	}
	return rundir.ConsoleLog(cliPaths().LogDir, name)
}

// exitStatus is berth's result for a command that ended with code.
func exitStatus(code int, err error) error {
	if err == nil && code != 0 {
		return &exitError{code: code}
	}
	return err
}

// printLog prints the last lines of a console log (with its rotated .1 before
// it when needed) and, when follow, what is appended, across rotations.
func printLog(cmd *cobra.Command, path string, lines int, follow bool) error {
	out := cmd.OutOrStdout()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		if !follow {
			return fmt.Errorf("no console log at %s (has the machine ever run?)", path)
		}
	} else if err != nil {
		return err
	}
	if f != nil {
		data, _ := io.ReadAll(f)
		if lines > 0 {
			if n := strings.Count(string(data), "\n"); n < lines {
				if old, err := os.ReadFile(path + ".1"); err == nil {
					data = append(old, data...)
				}
			}
			data = lastLines(data, lines)
		}
		_, _ = out.Write(data)
	}
	if !follow {
		if f != nil {
			f.Close()
		}
		return nil
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	buf := make([]byte, 32<<10)
	for {
		if f != nil {
			n, _ := f.Read(buf)
			if n > 0 {
				_, _ = out.Write(buf[:n])
				continue
			}
			// Rotated? Then the path names a new, shorter file.
			if st, err := os.Stat(path); err == nil {
				if cur, err := f.Stat(); err == nil && !os.SameFile(st, cur) {
					f.Close()
					f, _ = os.Open(path)
					continue
				}
			}
		} else if nf, err := os.Open(path); err == nil {
			f = nf
			continue
		}
		select {
		case <-sigs:
			return nil
		case <-cmd.Context().Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func lastLines(data []byte, n int) []byte {
	count := 0
	for i := len(data) - 1; i >= 0; i-- {
		if data[i] == '\n' && i != len(data)-1 {
			count++
			if count == n {
				return data[i+1:]
			}
		}
	}
	return data
}
