package plan

import (
	"fmt"
	"sort"

	"github.com/berthd/berth/spec"
)

// diffCredentials lists the credentials that differ, never their values: a
// literal is compared by its hash (the running machine's definition, read
// back from machine.json, holds only that), and shown <redacted, changed>.
func diffCredentials(old, new map[string]spec.Credential) []string {
	var out []string
	for name, o := range old {
		n, ok := new[name]
		switch {
		case !ok:
			out = append(out, "credentials."+name+": removed")
		case credentialSource(o) != credentialSource(n):
			out = append(out, "credentials."+name+": <redacted, changed>")
		}
	}
	for name := range new {
		if _, ok := old[name]; !ok {
			out = append(out, "credentials."+name+": added")
		}
	}
	sort.Strings(out)
	return out
}

// credentialSource is a credential as berth may show it: where it comes
// from, and a literal by its hash.
func credentialSource(c spec.Credential) spec.Credential {
	if c.Value != "" {
		c.Value = spec.Secret(c.Value.Sum())
	}
	return c
}

// diffFiles lists changes to the files written before a root's first boot:
// nothing restarts, and the machine's root keeps what it was given.
func diffFiles(old, new []spec.ProvisionFile) []string {
	var out []string
	if len(old) == len(new) {
		// Entry by entry: "files[1].content: a → b".
		for i := range old {
			out = append(out, diffJSON(fmt.Sprintf("files[%d]", i), old[i], new[i])...)
		}
	} else {
		out = diffJSON("files", old, new)
	}
	for i := range out {
		out[i] += " (written before a root's first boot only: this root keeps its files)"
	}
	return out
}
