package spec

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/berthd/berth/internal/rundir"
)

// KindProfile is a named set of Machine fields that machines list in profiles.
const KindProfile = "Profile"

// Profile is a named set of Machine fields. A machine that lists profiles gets
// them in order, its own fields last: mappings merge key by key, everything else
// (lists, scalars) replaces what came before.
//
// A profile is not decoded into a struct of its own: its body is kept as YAML
// and merged, node by node, into the document of each machine that uses it.
// The merged tree is then decoded, validated and defaulted once, as a Machine,
// so every rule of the language applies to the result, and every value keeps
// the position it was written at, in the profile's file or the machine's.
type Profile struct {
	Source Source `json:"-"`
	Name   string `json:"name"`
	// Machines are the machines that list the profile, sorted.
	Machines []string `json:"machines"`

	body  *yaml.Node          // the document without apiVersion, kind and name
	nodes map[*yaml.Node]bool // every node of the document, to locate errors
}

// Origin is where a field of a machine's effective definition was written: in
// the machine's own document, or, with Profile set, in that profile's.
type Origin struct {
	Profile string `json:"profile,omitempty"`
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
}

// String is the origin as `berth show` writes it: web.yaml:12, or
// profile small (profiles/small.yaml:3).
func (o Origin) String() string {
	at := fmt.Sprintf("%s:%d", o.File, o.Line)
	if o.Profile == "" {
		return at
	}
	return "profile " + o.Profile + " (" + at + ")"
}

// profileKeys are the keys of a Profile document that are not Machine fields.
var profileKeys = []string{"apiVersion", "kind", "name"}

// parseProfile reads a Profile document: its name, and its body as the Machine
// fields it sets. The body is decoded on its own (into a Machine that is thrown
// away) so that a wrong type or an unknown field is reported even when no
// machine uses the profile; the checks that need a whole machine run on each
// machine that uses it.
func parseProfile(d *doc, n *yaml.Node) *entry {
	p := &Profile{Source: Source{d.file, d.start.line, d.start.col}, nodes: map[*yaml.Node]bool{}}
	p.body = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "apiVersion", "kind":
		case "name":
			d.decode(v, reflect.ValueOf(&p.Name).Elem(), "name", nil)
		case "profiles":
			d.errAt(nodePos(k), "profiles", "a profile cannot list profiles: list every profile in the machine's profiles, in the order they apply")
		default:
			p.body.Content = append(p.body.Content, k, v)
		}
	}
	checkName(d, "name", p.Name, "profile")
	d.self = p
	d.decodeStruct(p.body, reflect.ValueOf(&Machine{}).Elem(), "", nil)
	d.self = nil
	markNodes(n, p.nodes)
	return &entry{d: d, kind: KindProfile, profile: p}
}

func markNodes(n *yaml.Node, seen map[*yaml.Node]bool) {
	if n == nil || seen[n] {
		return
	}
	seen[n] = true
	for _, c := range n.Content {
		markNodes(c, seen)
	}
}

// mappingValue returns the value of key in mapping n, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Kind == yaml.ScalarNode && n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// follow resolves aliases (bounded: a cycle is reported by the decoder).
func follow(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// applyProfiles decodes the machines that list profiles, which parseDoc left
// for when every file is read: it merges each one's profiles and its own
// document, and decodes and validates the result.
func applyProfiles(entries []*entry) {
	profiles := map[string]*entry{}
	for _, e := range entries {
		if e.profile != nil && e.profile.Name != "" && profiles[e.profile.Name] == nil {
			profiles[e.profile.Name] = e
		}
	}
	for _, e := range entries {
		if e.node == nil {
			continue
		}
		d := e.d
		if v := follow(mappingValue(e.node, "name")); v != nil && v.Kind == yaml.ScalarNode {
			d.machine = v.Value
		}
		merged := (*yaml.Node)(nil)
		list := follow(mappingValue(e.node, "profiles"))
		if list != nil && list.Kind == yaml.SequenceNode {
			for i, item := range list.Content {
				item = follow(item)
				if item == nil || item.Kind != yaml.ScalarNode || isNull(item) {
					continue // the decoder reports it
				}
				field := fmt.Sprintf("profiles[%d]", i)
				pe := profiles[item.Value]
				switch {
				case pe == nil:
					d.errAt(nodePos(item), field, "no Profile named %q is declared%s", item.Value, declared(profiles, item.Value, KindProfile))
				case slices.Contains(d.profiles, pe.profile):
					d.errAt(nodePos(item), field, "profile %s is listed twice", item.Value)
				default:
					d.profiles = append(d.profiles, pe.profile)
					merged = d.mergeNodes(merged, pe.profile.body, "")
					if d.machine != "" {
						pe.profile.Machines = append(pe.profile.Machines, d.machine)
					}
				}
			}
		}
		merged = d.mergeNodes(merged, e.node, "")
		d.decodeStruct(merged, reflect.ValueOf(e.machine).Elem(), "", []string{"apiVersion", "kind"})
		e.validate()
		e.machine.Origins = d.origins()
	}
	for _, pe := range profiles {
		slices.Sort(pe.profile.Machines)
		pe.profile.Machines = slices.Compact(pe.profile.Machines)
	}
}

// mergeNodes lays over on top of base: when both are mappings, key by key,
// recursively; otherwise over replaces base. The nodes are the documents'
// own, so that every value keeps its position; a mapping made here is located
// where over's is. A machine's network: NAME over a profile's network mapping
// (or the reverse) is read as {name: NAME}, so a machine can pick the network
// and keep the profile's ports.
func (d *doc) mergeNodes(base, over *yaml.Node, path string) *yaml.Node {
	base, over = follow(base), follow(over)
	if base == nil || isNull(base) {
		return over
	}
	if path == "network" {
		base, over = d.expandName(base), d.expandName(over)
	}
	if base.Kind != yaml.MappingNode || over.Kind != yaml.MappingNode || strings.Count(path, ".") >= maxMergeDepth {
		return over
	}
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: over.Line, Column: over.Column}
	d.mark(out, over)
	out.Content = slices.Clone(base.Content)
	fromBase := map[string]int{} // key → its index in out.Content while base's value is there
	for i := 0; i+1 < len(base.Content); i += 2 {
		if k := follow(base.Content[i]); k != nil && k.Kind == yaml.ScalarNode {
			fromBase[k.Value] = i
		}
	}
	for i := 0; i+1 < len(over.Content); i += 2 {
		k := follow(over.Content[i])
		if k != nil && k.Kind == yaml.ScalarNode {
			if j, ok := fromBase[k.Value]; ok {
				delete(fromBase, k.Value) // a second k in over is a duplicate: the decoder reports it
				out.Content[j] = over.Content[i]
				out.Content[j+1] = d.mergeNodes(out.Content[j+1], over.Content[i+1], join(path, k.Value))
				continue
			}
		}
		out.Content = append(out.Content, over.Content[i], over.Content[i+1])
	}
	return out
}

// maxMergeDepth bounds the merge: the language nests three levels deep, and
// aliases that refer to their own mapping would otherwise merge forever (the
// decoder reports the cycle).
const maxMergeDepth = 16

// expandName turns the shorthand network: NAME into {name: NAME}, located
// where NAME was written.
func (d *doc) expandName(n *yaml.Node) *yaml.Node {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return n
	}
	key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "name", Line: n.Line, Column: n.Column}
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column, Content: []*yaml.Node{key, n}}
	d.mark(key, n)
	d.mark(m, n)
	return m
}

// mark records that node made, built by the merge, is located where like is
// (in like's profile, or in the machine's document).
func (d *doc) mark(made, like *yaml.Node) {
	if p := d.pos(like).prof; p != nil {
		if d.merged == nil {
			d.merged = map[*yaml.Node]*Profile{}
		}
		d.merged[made] = p
	}
}

// origins lists where each field of the machine was written, for its
// top-level fields and the fields one level below them.
func (d *doc) origins() map[string]Origin {
	o := make(map[string]Origin, len(d.at))
	for path, p := range d.at {
		if path == "" || strings.Contains(path, "[") || strings.Count(path, ".") > 1 {
			continue
		}
		org := Origin{File: d.file, Line: p.line, Col: p.col}
		if p.prof != nil {
			org.Profile, org.File = p.prof.Name, p.prof.Source.File
		}
		o[path] = org
	}
	return o
}

// hasKey reports whether mapping n has key.
func hasKey(n *yaml.Node, key string) bool { return mappingValue(n, key) != nil }

// nameUsers names the machines that use a profile in the errors found when the
// profile was read on its own.
func nameUsers(errs ErrorList, profiles map[string]*entry) {
	for _, e := range errs {
		if pe := profiles[e.Profile]; pe != nil && e.Machines == nil && e.File == pe.d.file {
			e.Machines = pe.profile.Machines
		}
	}
}

// profileSchema turns the schema of a Machine into a Profile's: any Machine
// field but profiles, none of them required but the profile's own name.
func profileSchema(s, props map[string]any) {
	delete(props, "profiles")
	props["name"] = map[string]any{"type": "string", "pattern": rundir.NamePattern, "maxLength": rundir.MaxNameLen,
		"description": "Profile name: a DNS label, at most 63 characters; machines list it in profiles."}
	s["required"] = []string{"name"}
}

// imageFromProfiles lets a Machine's schema leave image to its profiles: a
// machine names its image or lists profiles (the decoder checks that one of
// them gives it).
func imageFromProfiles(s map[string]any) {
	s["required"] = slices.DeleteFunc(s["required"].([]string), func(f string) bool { return f == "image" })
	s["anyOf"] = []any{map[string]any{"required": []string{"image"}}, map[string]any{"required": []string{"profiles"}}}
}

// inProfiles is what a "missing" message adds for a machine with profiles:
// the field may be written in either place.
func inProfiles(m *Machine) string {
	if len(m.Profiles) == 0 {
		return ""
	}
	return " (here or in one of its profiles: " + strings.Join(m.Profiles, ", ") + ")"
}
