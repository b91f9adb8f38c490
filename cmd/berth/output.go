package main

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// output prints a verb's result in the format the global -o flag asks for:
// JSON of the value for scripts (-o json), or else the text a person reads.
// Every verb prints its result through one.
type output struct {
	w    io.Writer
	json bool
}

// outputOf is the output of cmd: its stdout, in the format of -o.
func outputOf(cmd *cobra.Command) output {
	return output{w: cmd.OutOrStdout(), json: globals.output == "json"}
}

// print writes v as indented JSON, a nil list as [] (never null), or else has
// text write the text form.
func (o output) print(v any, text func(w io.Writer) error) error {
	if !o.json {
		return text(o.w)
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		v = []any{}
	}
	enc := json.NewEncoder(o.w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// line writes one item of a stream (the event log): as a line of JSON, so that
// a reader can take the stream line by line, or else as the line text.
func (o output) line(v any, text string) error {
	if o.json {
		return json.NewEncoder(o.w).Encode(v)
	}
	_, err := fmt.Fprintln(o.w, text)
	return err
}

// printList prints items as a JSON array, or else as a table in columns, as
// machinectl's lists are: header and the row of each item.
func printList[T any](o output, items []T, header []string, row func(T) []string) error {
	return o.print(items, func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(header, "\t"))
		for _, item := range items {
			fmt.Fprintln(tw, strings.Join(row(item), "\t"))
		}
		return tw.Flush()
	})
}

// ago renders a time as a short age: "12s ago", "5m ago", "3h ago", "2d ago".
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// dash stands in for an empty cell of a table.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortDigest shortens "sha256:HEX" to its first 12 hex digits, as docker does.
func shortDigest(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}
