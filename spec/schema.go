package spec

import (
	"encoding/json"
	"net/netip"
	"reflect"

	"github.com/berthd/berth/internal/rundir"
)

// SchemaID is the $id of the JSON Schema. Editors find the schema through the
// `# yaml-language-server: $schema=PATH` modeline, not through this name.
const SchemaID = "https://github.com/berthd/berth/berth.schema.json"

// Schema returns the JSON Schema (draft-07, which the YAML language server handles
// fully) of a berth definition document. It is generated from the same types and
// struct tags the decoder uses, so the two cannot drift apart; the decoder is the
// authority and checks more (addresses against subnets, references, clashes).
func Schema() []byte {
	g := &schemaGen{defs: map[string]any{}}
	root := map[string]any{
		"$schema":     "http://json-schema.org/draft-07/schema#",
		"$id":         SchemaID,
		"title":       "berth definition (" + APIVersion + ")",
		"description": "One berth document: a Machine, a Network, an Image or a Profile. A file may hold several, separated by ---.",
		"type":        "object",
		"required":    []string{"apiVersion", "kind"},
		"properties": map[string]any{
			"apiVersion": map[string]any{"const": APIVersion, "description": "Version of the definition language."},
			"kind":       map[string]any{"enum": kinds, "description": "The kind of document."},
		},
	}
	var branches []any
	for _, k := range []struct {
		kind string
		t    reflect.Type
		doc  string
	}{
		{KindMachine, reflect.TypeFor[Machine](), "A full-OS system container that boots its own init (or, with command, runs one program)."},
		{KindNetwork, reflect.TypeFor[Network](), "A bridge on the host with a subnet that machines attach to."},
		{KindImage, reflect.TypeFor[Image](), "A named root filesystem that machine roots are made from, with exactly one source."},
		{KindProfile, reflect.TypeFor[Machine](), "A named set of Machine fields that machines take by listing it in profiles."},
	} {
		s := g.object(k.t, k.doc)
		props := s["properties"].(map[string]any)
		props["apiVersion"] = map[string]any{"const": APIVersion}
		props["kind"] = map[string]any{"const": k.kind}
		switch k.kind {
		case KindProfile:
			profileSchema(s, props)
		case KindMachine:
			imageFromProfiles(s)
		}
		s["required"] = append([]string{"apiVersion", "kind"}, s["required"].([]string)...)
		if k.kind == KindImage {
			var one []any
			for _, src := range imageSources {
				one = append(one, map[string]any{"required": []string{src}})
			}
			s["oneOf"] = one
		}
		g.defs[k.kind] = s
		branches = append(branches, map[string]any{
			"if":   map[string]any{"required": []string{"kind"}, "properties": map[string]any{"kind": map[string]any{"const": k.kind}}},
			"then": map[string]any{"$ref": "#/definitions/" + k.kind},
		})
	}
	root["allOf"] = branches
	root["definitions"] = g.defs
	b, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		panic("spec: schema: " + err.Error())
	}
	return append(b, '\n')
}

type schemaGen struct {
	defs map[string]any
}

// Schemas of the field formats named by a `format` tag.
var formats = map[string]map[string]any{
	"name":    {"pattern": rundir.NamePattern, "maxLength": rundir.MaxNameLen},
	"abspath": {"pattern": "^/"},
	"ifname":  {"pattern": `^[^/:\s]+$`, "maxLength": maxInterfaceNameLen},
	"domain":  {"pattern": domainPattern, "maxLength": maxDomainLen},
}

var (
	sizeSchema = map[string]any{"anyOf": []any{
		map[string]any{"type": "integer", "minimum": 0},
		map[string]any{"type": "string", "pattern": `^[0-9]+(\.[0-9]+)?\s*([KMGTPkmgtp](i?[Bb])?|[Bb])?$`},
	}}
	durationSchema = map[string]any{"anyOf": []any{
		map[string]any{"type": "integer", "minimum": 0},
		map[string]any{"type": "string", "pattern": `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`},
	}}
)

// customSchemas are the schemas of the types with their own decoders (customs).
var customSchemas map[reflect.Type]func(g *schemaGen) map[string]any

func init() {
	customSchemas = map[reflect.Type]func(g *schemaGen) map[string]any{
		reflect.TypeFor[Size]():     func(*schemaGen) map[string]any { return sizeSchema },
		reflect.TypeFor[Duration](): func(*schemaGen) map[string]any { return durationSchema },
		reflect.TypeFor[FileMode](): func(*schemaGen) map[string]any {
			return map[string]any{"type": []string{"string", "integer"}, "pattern": "^(0o)?[0-7]{1,5}$"}
		},
		reflect.TypeFor[PrivateUsers](): func(*schemaGen) map[string]any {
			return map[string]any{"anyOf": []any{
				map[string]any{"type": "boolean"},
				map[string]any{"enum": []string{"off", "pick", "no", "yes", "on"}},
				map[string]any{"type": "integer", "minimum": 65536, "maximum": 4294901760, "multipleOf": 65536},
				map[string]any{"type": "string", "pattern": "^(0[xX][0-9a-fA-F]+|[0-9]+)$"},
			}}
		},
		reflect.TypeFor[netip.Addr](): func(*schemaGen) map[string]any {
			return map[string]any{"type": "string", "pattern": `^[0-9A-Fa-f:.]+$`}
		},
		reflect.TypeFor[netip.Prefix](): func(*schemaGen) map[string]any {
			return map[string]any{"type": "string", "pattern": `^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$`}
		},
		reflect.TypeFor[MachineNetwork](): func(g *schemaGen) map[string]any {
			return map[string]any{"anyOf": []any{
				map[string]any{"type": "string", "description": "Short for {name: STRING}."},
				g.ref(reflect.TypeFor[MachineNetwork]()),
			}}
		},
		reflect.TypeFor[Readiness](): readinessSchema,
		reflect.TypeFor[Port](): func(g *schemaGen) map[string]any {
			return map[string]any{"anyOf": []any{
				map[string]any{"type": "integer", "minimum": 1, "maximum": 65535},
				map[string]any{"type": "string", "pattern": `^((\[[0-9A-Fa-f:.]+\]|[0-9.]+):)?[0-9]+(:[0-9]+)?(/(tcp|udp))?$`, "description": "[HOSTADDRESS:]HOSTPORT[:MACHINEPORT][/PROTOCOL]"},
				g.ref(reflect.TypeFor[Port]()),
			}}
		},
	}
}

// of returns the schema of a value of type t.
func (g *schemaGen) of(t reflect.Type) map[string]any {
	if f, ok := customSchemas[t]; ok {
		return f(g)
	}
	switch t.Kind() {
	case reflect.Pointer:
		return g.of(t.Elem())
	case reflect.Struct:
		return g.ref(t)
	case reflect.Slice:
		return map[string]any{"type": "array", "items": g.of(t.Elem())}
	case reflect.Map:
		if t.Elem().Kind() != reflect.String {
			return map[string]any{"type": "object", "additionalProperties": g.of(t.Elem())}
		}
		// The decoder reads any scalar as a string value (DEBUG: true is "true").
		return map[string]any{"type": "object", "additionalProperties": map[string]any{"type": []string{"string", "number", "boolean"}}}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int:
		return map[string]any{"type": "integer"}
	case reflect.Float64:
		return map[string]any{"type": "number"}
	}
	panic("spec: no schema for " + t.String())
}

// ref defines a struct type once under definitions and refers to it.
func (g *schemaGen) ref(t reflect.Type) map[string]any {
	if _, ok := g.defs[t.Name()]; !ok {
		g.defs[t.Name()] = nil // placeholder against recursion
		g.defs[t.Name()] = g.object(t, "")
	}
	return map[string]any{"$ref": "#/definitions/" + t.Name()}
}

// object is the schema of a struct: its fields, none other allowed.
func (g *schemaGen) object(t reflect.Type, doc string) map[string]any {
	props := map[string]any{}
	required := []string{}
	si := infoOf(t)
	for _, f := range si.fields {
		sf := t.Field(f.index)
		var s map[string]any
		if f.enum != nil {
			s = map[string]any{"enum": f.enum}
		} else {
			s = map[string]any{}
			for k, v := range g.of(sf.Type) {
				s[k] = v
			}
		}
		if format := sf.Tag.Get("format"); format != "" {
			for k, v := range formats[format] {
				s[k] = v
			}
		}
		if f.doc != "" {
			if _, isRef := s["$ref"]; isRef {
				// draft-07 ignores the siblings of $ref; allOf keeps the description.
				s = map[string]any{"allOf": []any{s}}
			}
			s["description"] = f.doc
		}
		props[f.name] = s
		if sf.Tag.Get("required") == "true" {
			required = append(required, f.name)
		}
	}
	s := map[string]any{
		"type":                 "object",
		"additionalProperties": false,
		"properties":           props,
		"required":             required,
	}
	if doc != "" {
		s["description"] = doc
	}
	return s
}
