package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/berthd/berth/spec"
	"github.com/spf13/cobra"
)

func newValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate [PATH...]",
		Short: "Check definition files without applying them",
		Long: `validate reads the definitions in PATH (files, or directories searched for
*.yaml and *.yml; default: the current directory) as one set and reports every
error with file:line:column and the field. It needs neither root nor berthd.

Exit status: 0 when the set is valid, 1 when it is not.`,
		Example: `  berth validate examples/
  berth validate -o json machines/web.yaml networks/`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"."}
			}
			set, err := spec.Load(args...)
			var list spec.ErrorList
			if err != nil && !errors.As(err, &list) {
				return err
			}
			return reportValidation(outputOf(cmd), cmd.ErrOrStderr(), set, list)
		},
	}
}

// validationResult is `berth validate -o json`'s output.
type validationResult struct {
	Valid    bool          `json:"valid"`
	Machines int           `json:"machines"`
	Networks int           `json:"networks"`
	Images   int           `json:"images"`
	Profiles int           `json:"profiles"`
	Errors   []*spec.Error `json:"errors"`
	// Warnings are what is valid but likely a mistake: a profile no machine uses.
	Warnings []string `json:"warnings,omitempty"`
}

// reportValidation prints the summary or the errors and returns the exit status
// as an error (nil for 0). Errors go to stderr in text mode, so that a script can
// tell them from the summary; in JSON mode everything is one object on stdout.
func reportValidation(o output, stderr io.Writer, set *spec.Set, errs spec.ErrorList) error {
	r := validationResult{Valid: len(errs) == 0, Errors: errs}
	if r.Errors == nil {
		r.Errors = []*spec.Error{}
	}
	if set != nil {
		r.Machines, r.Networks, r.Images, r.Profiles = len(set.Machines), len(set.Networks), len(set.Images), len(set.Profiles)
		for _, p := range set.Profiles {
			if len(p.Machines) == 0 {
				r.Warnings = append(r.Warnings, fmt.Sprintf("%s:%d: profile %s is used by no machine", p.Source.File, p.Source.Line, p.Name))
			}
		}
	}
	err := o.print(r, func(stdout io.Writer) error {
		for _, w := range r.Warnings {
			fmt.Fprintln(stderr, "warning: "+w)
		}
		if r.Valid {
			counts := plural(r.Machines, "machine") + ", " + plural(r.Networks, "network") + ", " + plural(r.Images, "image")
			if r.Profiles > 0 {
				counts += ", " + plural(r.Profiles, "profile")
			}
			fmt.Fprintf(stdout, "%s: ok\n", counts)
			return nil
		}
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		fmt.Fprintf(stderr, "%s\n", plural(len(errs), "error"))
		return nil
	})
	if err != nil {
		return err
	}
	if !r.Valid {
		return &exitError{code: 1}
	}
	return nil
}

func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
