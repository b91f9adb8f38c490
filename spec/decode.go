package spec

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// The decoder walks yaml.v3's node tree into the document types by reflection,
// driven by the same struct tags the schema generator reads (json name, enum), so
// the language has one definition. Walking nodes rather than calling
// yaml.Unmarshal is what gives every field its line and column, lets one run
// report all mistakes, and makes unknown keys, duplicate keys and type mismatches
// errors instead of silent surprises.

// pos is a line and column in a file (both 1-based). prof is the Profile whose
// document the node is in, nil for the document being decoded.
type pos struct {
	line, col int
	prof      *Profile
}

// maxNodes bounds the work on one document: YAML aliases can make a small file
// expand into an enormous tree ("billion laughs").
const maxNodes = 100_000

// doc is the decoding state of one document.
type doc struct {
	file  string
	start pos             // the document's mapping
	at    map[string]pos  // value position of every field path present
	bad   map[string]bool // paths the decoder already reported
	errs  *ErrorList
	nodes int

	// A Machine that lists profiles is decoded from a merged tree (profile.go):
	// profiles are the ones applied, whose nodes are located in their own files;
	// machine is the machine's name, for the errors a profile's field causes.
	profiles []*Profile
	merged   map[*yaml.Node]*Profile // mappings the merge made, by where they are located
	machine  string
	// self is set while a Profile document is checked on its own.
	self *Profile
}

// has reports whether the field path was written in the document (even as null).
func (d *doc) has(path string) bool {
	_, ok := d.at[path]
	return ok
}

// errorf records an error at the position of path, or of its nearest written
// parent, or the document's start when nothing of it was written.
func (d *doc) errorf(path, format string, args ...any) {
	if d.bad[path] {
		return // one error per field: its value could not even be read
	}
	p, ok := d.at[path]
	for q := path; !ok && q != ""; {
		q = parentPath(q)
		p, ok = d.at[q]
	}
	if !ok {
		p = d.start
	}
	d.errAt(p, path, format, args...)
}

func (d *doc) errAt(p pos, path, format string, args ...any) {
	if d.bad == nil {
		d.bad = map[string]bool{}
	}
	d.bad[path] = true
	e := &Error{File: d.file, Line: p.line, Col: p.col, Field: path, Msg: fmt.Sprintf(format, args...)}
	switch {
	case p.prof != nil:
		e.File, e.Profile, e.Machines = p.prof.Source.File, p.prof.Name, []string{d.machine}
	case d.self != nil:
		e.Profile = d.self.Name // Machines: its users, filled in by build
	}
	*d.errs = append(*d.errs, e)
}

// parentPath drops the last element of a field path: a.b[2] → a.b → a → "".
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func join(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func nodePos(n *yaml.Node) pos { return pos{line: n.Line, col: n.Column} }

// pos is where node n was written: in the document, or in one of the profiles
// merged into it.
func (d *doc) pos(n *yaml.Node) pos {
	p := nodePos(n)
	if pr, ok := d.merged[n]; ok {
		p.prof = pr
		return p
	}
	for _, pr := range d.profiles {
		if pr.nodes[n] {
			p.prof = pr
			break
		}
	}
	return p
}

// fieldInfo describes one struct field of the language.
type fieldInfo struct {
	name  string // as written in YAML
	index int
	enum  []string
	doc   string
}

type structInfo struct {
	fields []fieldInfo
	byName map[string]int
	names  []string
}

var structCache sync.Map // reflect.Type → *structInfo

func infoOf(t reflect.Type) *structInfo {
	if si, ok := structCache.Load(t); ok {
		return si.(*structInfo)
	}
	si := &structInfo{byName: map[string]int{}}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || name == "" || !f.IsExported() {
			continue
		}
		fi := fieldInfo{name: name, index: i, doc: f.Tag.Get("doc")}
		if e := f.Tag.Get("enum"); e != "" {
			fi.enum = strings.Split(e, ",")
		}
		si.byName[name] = len(si.fields)
		si.fields = append(si.fields, fi)
		si.names = append(si.names, name)
	}
	structCache.Store(t, si)
	return si
}

// custom decodes the types that YAML does not map onto directly. scalarOnly
// types decode a scalar themselves and otherwise fall through to the generic
// struct decoding (the shorthand forms of network and ports).
type custom struct {
	decode     func(n *yaml.Node, v reflect.Value) error
	scalarOnly bool
}

var customs map[reflect.Type]custom

func init() {
	customs = map[reflect.Type]custom{
		reflect.TypeFor[Size](): {decode: func(n *yaml.Node, v reflect.Value) error {
			if n.Kind != yaml.ScalarNode {
				return errType("a size (512M, 2G)", n)
			}
			s, err := ParseSize(n.Value)
			v.SetInt(int64(s))
			return err
		}},
		reflect.TypeFor[Duration](): {decode: func(n *yaml.Node, v reflect.Value) error {
			if n.Kind != yaml.ScalarNode {
				return errType("a duration (30s, 1m30s)", n)
			}
			d, err := ParseDuration(n.Value)
			v.SetInt(int64(d))
			return err
		}},
		reflect.TypeFor[FileMode](): {decode: func(n *yaml.Node, v reflect.Value) error {
			if n.Kind != yaml.ScalarNode {
				return errType("an octal mode (\"0755\")", n)
			}
			m, err := ParseFileMode(n.Value)
			v.SetUint(uint64(m))
			return err
		}},
		reflect.TypeFor[PrivateUsers](): {decode: func(n *yaml.Node, v reflect.Value) error {
			if n.Kind != yaml.ScalarNode {
				return errType("pick, false or the first UID of a range", n)
			}
			switch strings.ToLower(n.Value) {
			case "false", "off", "no":
				v.SetString(string(PrivateUsersOff))
			case "true", "pick", "yes", "on":
				v.SetString(string(PrivateUsersPick))
			default:
				base, err := strconv.ParseUint(n.Value, 0, 32)
				if err != nil {
					return fmt.Errorf("%q is not a user namespace setting: use pick (true), false, or the first UID of a range (a multiple of 65536, like 0x80000)", n.Value)
				}
				v.SetString(strconv.FormatUint(base, 10))
			}
			return nil
		}},
		reflect.TypeFor[netip.Addr](): {decode: func(n *yaml.Node, v reflect.Value) error {
			if n.Kind != yaml.ScalarNode {
				return errType("an IP address", n)
			}
			a, err := netip.ParseAddr(n.Value)
			if err != nil || a.Zone() != "" {
				return fmt.Errorf("%s is not an IP address", n.Value)
			}
			v.Set(reflect.ValueOf(a.Unmap()))
			return nil
		}},
		reflect.TypeFor[netip.Prefix](): {decode: func(n *yaml.Node, v reflect.Value) error {
			if n.Kind != yaml.ScalarNode {
				return errType("an address in CIDR form (10.87.0.0/24)", n)
			}
			p, err := parsePrefix(n.Value)
			if err != nil {
				return err
			}
			v.Set(reflect.ValueOf(p))
			return nil
		}},
		reflect.TypeFor[MachineNetwork](): {scalarOnly: true, decode: func(n *yaml.Node, v reflect.Value) error {
			v.Set(reflect.ValueOf(MachineNetwork{Name: n.Value}))
			return nil
		}},
		reflect.TypeFor[Port](): {scalarOnly: true, decode: func(n *yaml.Node, v reflect.Value) error {
			p, err := ParsePort(n.Value)
			if err != nil {
				return err
			}
			v.Set(reflect.ValueOf(p))
			return nil
		}},
	}
}

// parsePrefix reads "ADDR/BITS" or a bare "ADDR", which becomes a full-length
// prefix (/32, /128) that validation and defaults treat as "no length given".
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%s is not an IP address", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	addr, bits, _ := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%s is not an IP address", addr)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s: /%s is not a prefix length for this address (0 to %d)", s, bits, a.BitLen())
	}
	return p, nil
}

type typeError string

func (e typeError) Error() string { return string(e) }

func errType(want string, n *yaml.Node) error {
	return typeError(fmt.Sprintf("expected %s, got %s", want, describe(n)))
}

// describe names what a node is, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!bool":
			return "a boolean (" + n.Value + ")"
		case "!!int", "!!float":
			return "a number (" + n.Value + ")"
		case "!!null":
			return "nothing"
		}
		return fmt.Sprintf("a string (%q)", n.Value)
	}
	return "something else"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// resolve follows aliases and counts the work done on the document.
func (d *doc) resolve(n *yaml.Node) (*yaml.Node, bool) {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	d.nodes++
	if n == nil || n.Kind == yaml.AliasNode {
		return nil, false
	}
	if d.nodes > maxNodes {
		if d.nodes == maxNodes+1 {
			d.errAt(d.pos(n), "", "the document expands to more than %d values (aliases?); split it up", maxNodes)
		}
		return nil, false
	}
	return n, true
}

// decode stores node n into v (settable), recording positions and errors under path.
func (d *doc) decode(n *yaml.Node, v reflect.Value, path string, enum []string) {
	n, ok := d.resolve(n)
	if !ok {
		return
	}
	d.at[path] = d.pos(n)
	if isNull(n) {
		return
	}
	t := v.Type()
	if c, ok := customs[t]; ok && (!c.scalarOnly || n.Kind == yaml.ScalarNode) {
		if err := c.decode(n, v); err != nil {
			d.errAt(d.pos(n), path, "%s", err.Error())
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		d.decode(n, p.Elem(), path, enum)
		v.Set(p)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.errAt(d.pos(n), path, "expected a mapping, got %s", describe(n))
			return
		}
		d.decodeStruct(n, v, path, nil)
	case reflect.Slice:
		d.decodeList(n, v, path, enum)
	case reflect.Map:
		d.decodeMap(n, v, path)
	default:
		d.decodeScalar(n, v, path, enum)
	}
}

// decodeList decodes a sequence into a slice; enum applies to every element (a
// list of enum strings).
func (d *doc) decodeList(n *yaml.Node, v reflect.Value, path string, enum []string) {
	if n.Kind != yaml.SequenceNode {
		d.errAt(d.pos(n), path, "expected a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, c := range n.Content {
		d.decode(c, s.Index(i), path+"["+strconv.Itoa(i)+"]", enum)
	}
	v.Set(s)
}

// decodeMap decodes a mapping into a map with string keys (environment). Its
// keys are the user's, so they get the same duplicate and plain-string checks as
// a struct's field names, and each value its own path.
func (d *doc) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errAt(d.pos(n), path, "expected a mapping, got %s", describe(n))
		return
	}
	t := v.Type()
	m := reflect.MakeMapWithSize(t, len(n.Content)/2)
	seen := map[string]pos{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, ok := d.key(n.Content[i], path, seen)
		if !ok {
			continue
		}
		ev := reflect.New(t.Elem()).Elem()
		d.decode(n.Content[i+1], ev, join(path, k), nil)
		m.SetMapIndex(reflect.ValueOf(k), ev)
	}
	v.Set(m)
}

// decodeScalar decodes a scalar into a string (checked against enum when the
// field has one), bool, int or float64.
//
// Scalars are converted with strconv rather than n.Decode, which builds a whole
// decoder per value and was a tenth of the cost of a large Load. The tags are
// yaml.v3's resolution, so the results are the same.
func (d *doc) decodeScalar(n *yaml.Node, v reflect.Value, path string, enum []string) {
	switch v.Kind() {
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errAt(d.pos(n), path, "expected a string, got %s", describe(n))
			return
		}
		if enum != nil && !slices.Contains(enum, n.Value) {
			d.errAt(d.pos(n), path, "%s", enumMsg(n.Value, enum))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || err != nil {
			d.errAt(d.pos(n), path, "expected true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int:
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || err != nil || int64(int(i)) != i {
			d.errAt(d.pos(n), path, "expected a whole number, got %s", describe(n))
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		var f float64
		var err error
		switch n.ShortTag() {
		case "!!int", "!!float":
			f, err = strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
			if err != nil {
				err = n.Decode(&f) // .inf, .nan, 0x10 …
			}
		default:
			err = typeError("")
		}
		if n.Kind != yaml.ScalarNode || err != nil {
			d.errAt(d.pos(n), path, "expected a number, got %s", describe(n))
			return
		}
		v.SetFloat(f)
	default:
		panic("spec: no decoder for " + v.Type().String())
	}
}

// key reads a mapping key, reporting keys that are not plain strings and keys
// written twice in the same mapping.
func (d *doc) key(k *yaml.Node, path string, seen map[string]pos) (string, bool) {
	k, ok := d.resolve(k)
	if !ok {
		return "", false
	}
	if k.Kind != yaml.ScalarNode || isNull(k) {
		d.errAt(d.pos(k), path, "a key must be a plain string, not %s", describe(k))
		return "", false
	}
	if k.Value == "<<" && k.ShortTag() == "!!merge" {
		d.errAt(d.pos(k), path, "merge keys (<<) are not supported; write the fields out or use one document per machine")
		return "", false
	}
	if p, dup := seen[k.Value]; dup {
		d.errAt(d.pos(k), join(path, k.Value), "written twice in the same mapping (first at line %d)", p.line)
		return "", false
	}
	seen[k.Value] = d.pos(k)
	return k.Value, true
}

// decodeStruct decodes a mapping into a struct, skipping the keys in skip (a
// document's apiVersion and kind).
func (d *doc) decodeStruct(n *yaml.Node, v reflect.Value, path string, skip []string) {
	si := infoOf(v.Type())
	seen := map[string]pos{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, ok := d.key(n.Content[i], path, seen)
		if !ok || slices.Contains(skip, k) {
			continue
		}
		idx, ok := si.byName[k]
		if !ok {
			kn := n.Content[i]
			msg := "unknown field"
			if s := suggest(k, si.names); s != "" {
				msg += fmt.Sprintf(", did you mean %q?", s)
			} else {
				msg += " (known: " + strings.Join(si.names, ", ") + ")"
			}
			d.errAt(d.pos(kn), join(path, k), "%s", msg)
			continue
		}
		f := si.fields[idx]
		d.decode(n.Content[i+1], v.Field(f.index), join(path, k), f.enum)
	}
}

func enumMsg(got string, enum []string) string {
	msg := fmt.Sprintf("%q is not one of %s", got, strings.Join(enum, ", "))
	if s := suggest(got, enum); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return msg
}

// suggest returns the candidate closest to word when it is close enough to be a
// likely typo: the same ignoring case, or at most half of its letters (and at most
// three) off.
func suggest(word string, candidates []string) string {
	best, bestD := "", 1<<30
	for _, c := range candidates {
		if strings.EqualFold(c, word) {
			return c
		}
		if dist := levenshtein(strings.ToLower(word), strings.ToLower(c)); dist < bestD {
			best, bestD = c, dist
		}
	}
	if limit := max(1, len(word)/2); bestD <= limit && bestD <= 3 {
		return best
	}
	return ""
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
