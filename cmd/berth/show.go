package main

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/machined"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/spec"
)

func newShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME [PATH]",
		Short: "Print a machine's effective definition (profiles merged, defaults filled in) and where each field came from",
		Long: `show prints the definition machine NAME runs by: its profiles applied in order,
its own fields last, the defaults filled in, as YAML, each field commented with
where it was written (a file and line, a profile) or "default". Without PATH it
is the definition in force (berthd's, or the sources' when berthd does not run);
with PATH, the one the definitions under PATH give, read as berth validate reads
them. -o json prints {definition, origins}.`,
		Example: `  berth show web
  berth show web machines/
  berth show -o json web`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeMachine,
		RunE: func(cmd *cobra.Command, args []string) error {
			var def *api.Definition
			var err error
			if len(args) == 2 {
				def, err = definitionFrom(args[1], args[0])
			} else {
				var ctl api.API
				if ctl, err = connect(cmd.Context()); err == nil {
					def, err = ctl.Definition(cmd.Context(), args[0])
				}
			}
			if err != nil {
				return err
			}
			return outputOf(cmd).print(def, func(w io.Writer) error { return printDefinition(w, def) })
		},
	}
}

// definitionFrom is machine name's definition as the files under path give it.
func definitionFrom(path, name string) (*api.Definition, error) {
	set, err := spec.Load(path)
	if err != nil {
		var list spec.ErrorList
		if errors.As(err, &list) {
			return nil, &exitError{code: 1, err: fmt.Errorf("the definitions under %s have errors (berth validate %s lists them):\n%w", path, path, list)}
		}
		return nil, err
	}
	m := set.Machine(name)
	if m == nil {
		var names []string
		for _, m := range set.Machines {
			names = append(names, m.Name)
		}
		return nil, fmt.Errorf("machine %q: %w: the definitions under %s declare %s", name, errdefs.ErrNotFound, path, strings.Join(names, ", "))
	}
	return machined.DefinitionOf(m)
}

// printDefinition writes the definition as a Machine document, with a comment
// on each top-level field and the fields of its mappings saying where it was
// written.
func printDefinition(w io.Writer, def *api.Definition) error {
	var n yaml.Node
	if err := yaml.Unmarshal(def.Definition, &n); err != nil || n.Kind != yaml.DocumentNode || len(n.Content) != 1 {
		return fmt.Errorf("the definition is not a mapping: %v", err)
	}
	body := n.Content[0]
	blockStyle(body)
	writeSizes(body, reflect.TypeFor[spec.Machine]())
	annotate(body, "", def.Origins, 1)
	str := func(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
	body.Content = append([]*yaml.Node{str("apiVersion"), str(spec.APIVersion), str("kind"), str(spec.KindMachine)}, body.Content...)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return err
	}
	return enc.Close()
}

// blockStyle drops the flow style and quotes that reading JSON gave the nodes,
// so the encoder writes YAML as a person does (quoting only what needs it).
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// writeSizes writes the sizes in n, the JSON of a value of type t, as a
// definition does (512M rather than 536870912).
func writeSizes(n *yaml.Node, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[spec.Size]():
		if v, err := strconv.ParseInt(n.Value, 10, 64); err == nil && n.Kind == yaml.ScalarNode {
			n.Value, n.Tag = spec.Size(v).String(), "!!str"
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for _, c := range n.Content {
			writeSizes(c, t.Elem())
		}
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			fields[name] = t.Field(i).Type
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if ft, ok := fields[n.Content[i].Value]; ok {
				writeSizes(n.Content[i+1], ft)
			}
		}
	}
}

// annotate comments each field of mapping n (paths under prefix) with its
// origin, down to depth more levels.
func annotate(n *yaml.Node, prefix string, origins map[string]api.FieldOrigin, depth int) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := k.Value
		if prefix != "" {
			path = prefix + "." + k.Value
		}
		comment := "default"
		if o, ok := origins[path]; ok {
			comment = fmt.Sprintf("%s:%d", o.File, o.Line)
			if o.Profile != "" {
				comment = "from profile " + o.Profile + " (" + comment + ")"
			}
		}
		if v.Kind == yaml.ScalarNode || len(v.Content) == 0 {
			v.LineComment = "# " + comment
		} else {
			k.LineComment = "# " + comment
		}
		if depth > 0 && v.Kind == yaml.MappingNode {
			annotate(v, path, origins, depth-1)
		}
	}
}
