package sources

import (
	"fmt"
	"slices"

	"github.com/berthd/berth/spec"
)

// literalSecrets are errors for the credentials given as a literal value in
// the files of a snapshot: berthd keeps an applied snapshot's files in its
// state directory, and would so hold the secret in clear. A watched
// directory (whose files are the user's own) may hold them.
func literalSecrets(set *spec.Set, files []File) []string {
	if set == nil {
		return nil
	}
	in := map[string]bool{}
	for _, f := range files {
		in[f.Name] = true
	}
	var out []string
	for _, m := range set.Machines {
		if !in[m.Source.File] {
			continue
		}
		for _, name := range sortedNames(m.Credentials) {
			if m.Credentials[name].Value == "" {
				continue
			}
			e := spec.Error{File: m.Source.File, Line: m.Source.Line, Col: m.Source.Col, Field: "credentials." + name + ".value",
				Msg: fmt.Sprintf("machine %q: berth apply PATH keeps a copy of these files in berthd's state, which would hold this secret in clear: "+
					"use file: (a host path berthd reads at each start), env: or credential: instead, or put the definition in a directory berthd watches", m.Name)}
			out = append(out, e.Error())
		}
	}
	return out
}

func sortedNames(m map[string]spec.Credential) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}
