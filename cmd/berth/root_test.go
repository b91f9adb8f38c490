package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// run runs berth in this process with args, as main does, and returns its exit
// code, stdout and stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	resetFlags(rootCmd)
	code := execute(args, &out, &errb)
	return code, out.String(), errb.String()
}

// resetFlags sets every flag of cmd and of its verbs back to its default: one
// process runs every command of the package's tests, and each starts as in a
// fresh berth (cobra keeps the values of an earlier Execute, and appends to
// repeatable flags).
func resetFlags(cmd *cobra.Command) {
	reset := func(f *pflag.Flag) {
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			_ = sv.Replace(nil)
		} else {
			_ = f.Value.Set(f.DefValue)
		}
		f.Changed = false
	}
	cmd.PersistentFlags().VisitAll(reset)
	cmd.Flags().VisitAll(reset)
	for _, c := range cmd.Commands() {
		resetFlags(c)
	}
}

// TestExitCode: what a verb returns becomes berth's exit status, and the
// error's text, once, on stderr: what scripts and CI pipelines key on.
func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		code   int
		stderr string
	}{
		{"success", nil, 0, ""},
		{"plain error", errors.New("machine \"web\": not found"), 1, "berth: machine \"web\": not found\n"},
		{"wrapped plain error", fmt.Errorf("kill web: %w", errors.New("no such process")), 1, "berth: kill web: no such process\n"},
		{"plan: changes pending", &exitError{code: 2}, 2, ""},
		{"plan: definition errors", &exitError{code: 1}, 1, ""},
		{"exit code with a message", &exitError{code: 1, err: errors.New("2 of 3 actions failed")}, 1, "berth: 2 of 3 actions failed\n"},
		{"a machine's own exit code", &exitError{code: 7}, 7, ""},
		{"wrapped exitError: its code, its message", fmt.Errorf("outer: %w", &exitError{code: 3, err: errors.New("inner")}), 3, "berth: inner\n"},
	} {
		var stderr bytes.Buffer
		if code := exitCode(tc.err, &stderr); code != tc.code || stderr.String() != tc.stderr {
			t.Errorf("%s: exitCode(%v) = %d, stderr %q; want %d, %q", tc.name, tc.err, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}

// TestExecute runs berth as main does, on verbs that need neither root nor a
// manager: the exit status and where the messages go.
func TestExecute(t *testing.T) {
	for _, tc := range []struct {
		args         []string
		code         int
		stdout       string // a part of stdout
		stderrPrefix string
	}{
		{[]string{"schema"}, 0, `"$schema"`, ""},
		{[]string{"validate", "../../examples"}, 0, "7 machines, 1 network, 1 image, 1 profile: ok\n", ""},
		// The errors themselves are the message: no "berth:" line after them.
		{[]string{"validate", "../../spec/testdata/broken/01-typos.yaml"}, 1, "", "../../spec/testdata/broken/01-typos.yaml:"},
		{[]string{"bogus"}, 1, "", "berth: unknown command \"bogus\" for \"berth\""},
		{[]string{"recreate", "web"}, 1, "", "berth: recreate deletes the root of web and everything written in it; add --yes to go ahead\n"},
		{[]string{"image", "build"}, 1, "", "berth: image build: give the definition with -f FILE\n"},
		{[]string{"help", "bogus"}, 0, "Unknown help topic", ""},
	} {
		code, stdout, stderr := run(t, tc.args...)
		if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.HasPrefix(stderr, tc.stderrPrefix) ||
			(tc.stderrPrefix == "" && stderr != "") || strings.Contains(stderr, "berth: exit status") {
			t.Errorf("berth %s = %d\nstdout %q\nstderr %q\nwant %d, stdout with %q, stderr starting %q",
				strings.Join(tc.args, " "), code, stdout, stderr, tc.code, tc.stdout, tc.stderrPrefix)
		}
	}
}

// commands are every command of berth's tree under cmd, cmd included, but
// cobra's help (it has no verbs of its own).
func commands(cmd *cobra.Command) []*cobra.Command {
	all := []*cobra.Command{cmd}
	for _, c := range cmd.Commands() {
		if c.Name() != "help" {
			all = append(all, commands(c)...)
		}
	}
	return all
}

// TestUnknownVerbs: a mistyped verb is an error in every command group of
// the tree, as at the top (exit 1, "unknown command", what it may have
// meant), never the group's help with exit 0: a script must not believe it
// worked. New groups are held to it by the walk.
func TestUnknownVerbs(t *testing.T) {
	groups := 0
	for _, g := range commands(rootCmd) {
		if !g.HasSubCommands() {
			continue
		}
		groups++
		path := strings.Fields(g.CommandPath())[1:]
		code, out, errs := run(t, append(path, "bogus")...)
		if want := fmt.Sprintf("berth: unknown command %q for %q", "bogus", g.CommandPath()); code != 1 || !strings.HasPrefix(errs, want) || out != "" {
			t.Errorf("berth %s bogus = %d\nstdout %q\nstderr %q\nwant 1, stderr starting %q", g.CommandPath(), code, out, errs, want)
		}
		// One letter off a verb it has: that verb is suggested.
		for _, c := range g.Commands() {
			if len(c.Name()) < 4 || c.Name() == "help" || c.Hidden {
				continue
			}
			typo := c.Name()[:len(c.Name())-1]
			if code, _, errs := run(t, append(path, typo)...); code != 1 || !strings.Contains(errs, "Did you mean this?\n\t"+c.Name()) {
				t.Errorf("berth %s %s = %d, stderr %q: want %q suggested", g.CommandPath(), typo, code, errs, c.Name())
			}
			break
		}
		// The group alone: its help.
		if len(path) > 0 {
			if code, out, _ := run(t, path...); code != 0 || !strings.Contains(out, "Available Commands:") {
				t.Errorf("berth %s = %d, %q: want its help", g.CommandPath(), code, out)
			}
		}
	}
	if groups < 3 {
		t.Errorf("only %d command groups in the tree", groups)
	}
}

// TestVerbsHelp: every verb says how to use it (an Example in --help),
// takes only the arguments it has (a verb without any refuses one),
// completes the machine or image it names, for every verb in the tree, new
// ones included.
func TestVerbsHelp(t *testing.T) {
	// Verbs whose first argument names something new, not one to complete.
	creates := map[string]bool{"berth image import": true}
	for _, c := range commands(rootCmd) {
		if !c.Runnable() || c.Hidden || c.HasSubCommands() {
			continue // a group's own RunE only refuses unknown verbs
		}
		path := c.CommandPath()
		if !strings.Contains(c.Example, path+" ") && !strings.HasSuffix(c.Example, path) {
			t.Errorf("%s has no Example of it for --help: %q", path, c.Example)
		}
		if c.Args == nil {
			t.Errorf("%s does not say which arguments it takes (Args)", path)
			continue
		}
		use := strings.Fields(c.Use)
		if len(use) == 1 && c.ValidateArgs([]string{"extra"}) == nil {
			t.Errorf("%s takes no arguments but accepts one", path)
		}
		if len(use) > 1 && !creates[path] {
			switch strings.Trim(use[1], "[].") {
			case "NAME", "SRC":
				if c.ValidArgsFunction == nil {
					t.Errorf("%s takes %s but does not complete it", path, use[1])
				}
			}
		}
	}
}
