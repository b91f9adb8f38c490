package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// Load reads the definitions in paths — files, or directory trees searched
// recursively for *.yaml and *.yml files in lexical order, skipping hidden
// entries — validates them as one set, applies the defaults and returns the set.
// Any number of documents may be in one file, separated by ---.
//
// When anything is wrong, Load returns a nil Set and an ErrorList with every error
// of every file (errors.Is(err, ErrInvalid) holds).
func Load(paths ...string) (*Set, error) {
	var errs ErrorList
	var files []string
	seen := map[string]bool{}
	for _, p := range paths {
		found, err := findFiles(p)
		if err == nil && len(found) == 0 {
			err = errors.New("no *.yaml or *.yml files in this directory")
		}
		if err != nil {
			errs = append(errs, &Error{File: p, Msg: readErr(p, err)})
			continue
		}
		for _, f := range found {
			if !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
	}
	if len(paths) == 0 {
		errs = append(errs, &Error{File: ".", Msg: "no definition files given"})
	}

	return parseAll(len(files), func(i int) (string, []byte, error) {
		data, err := readFile(files[i])
		if err != nil {
			err = errors.New(readErr(files[i], err))
		}
		return files[i], data, err
	}, errs)
}

// parseAll reads and decodes n files and builds the set. Reading and decoding is
// independent per file and most of the cost of a large tree, so it runs on every
// CPU; the documents are merged in file order, so the result does not depend on
// the scheduling. file(i) returns the i-th file's name and content.
func parseAll(n int, file func(i int) (string, []byte, error), errs ErrorList) (*Set, error) {
	parsed := make([][]*entry, n)
	fileErrs := make([]ErrorList, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), max(1, n)) {
		wg.Go(func() {
			for i := range next {
				name, data, err := file(i)
				if err != nil {
					fileErrs[i] = ErrorList{{File: name, Msg: err.Error()}}
					continue
				}
				parsed[i] = parseFile(name, data, &fileErrs[i])
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()

	var entries []*entry
	lists := []*ErrorList{&errs}
	for i := range n {
		entries = append(entries, parsed[i]...)
		lists = append(lists, &fileErrs[i])
	}
	return build(entries, lists...)
}

// Parse reads the documents of one file as a complete set: references to
// Networks or Images must be satisfied within data.
func Parse(filename string, data []byte) (*Set, error) {
	var errs ErrorList
	entries := parseFile(filename, data, &errs)
	return build(entries, &errs)
}

// maxFileSize bounds a definition file: anything larger is a mistake (a log or
// an image given by accident), and reading it whole would only waste memory.
const maxFileSize = 16 << 20

var errTooLarge = fmt.Errorf("larger than %d MiB: not a definition file", maxFileSize>>20)

// readFile reads one definition file whole, or fails with errTooLarge.
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, errTooLarge
	}
	return data, nil
}

// readErr shortens an os error about name itself: name is already in front of
// it. An error about another path (a subdirectory of name) keeps its path.
func readErr(name string, err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == name {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}

// IsDefinitionFile reports whether a file name found in a tree (a directory, a
// Git source) is one berth loads: *.yaml or *.yml.
func IsDefinitionFile(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// findFiles lists the definition files under path: path itself when it is a
// file, whatever its name, else the *.yaml and *.yml files of the tree in
// lexical order, hidden entries skipped. A tree without any gives none and no
// error. Errors are the os package's; on one, the files found before it are
// returned with it.
func findFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{filepath.Clean(path)}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := de.Name()
		if p != path && strings.HasPrefix(name, ".") {
			if de.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !de.IsDir() && IsDefinitionFile(name) {
			files = append(files, p)
		}
		return nil
	})
	return files, err
}

// entry is one decoded document with its positions, kept until the set is built
// so that cross-document errors point at the right place.
type entry struct {
	d       *doc
	kind    string
	machine *Machine
	network *Network
	image   *Image
	profile *Profile
	// node is the document of a machine that lists profiles: it is decoded
	// once every file is read (applyProfiles).
	node *yaml.Node
}

func (e *entry) name() string {
	switch {
	case e.machine != nil:
		return e.machine.Name
	case e.network != nil:
		return e.network.Name
	case e.profile != nil:
		return e.profile.Name
	default:
		return e.image.Name
	}
}

var kinds = []string{KindMachine, KindNetwork, KindImage, KindProfile}

var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

// parseFile decodes every document of one file. It never panics: the fuzz target
// holds it to that, and a parser panic is reported as an error of the file.
func parseFile(file string, data []byte, errs *ErrorList) (out []*entry) {
	defer func() {
		if r := recover(); r != nil {
			*errs = append(*errs, &Error{File: file, Msg: fmt.Sprintf("cannot parse YAML: %v", r)})
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var root yaml.Node
		err := dec.Decode(&root)
		if err == io.EOF {
			return out
		}
		if err != nil {
			e := &Error{File: file, Msg: err.Error()}
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				if m := yamlLine.FindStringSubmatch(e.Msg); m != nil {
					e.Line, _ = strconv.Atoi(m[1])
					e.Msg = "invalid YAML: " + e.Msg[len(m[0]):]
				}
			}
			*errs = append(*errs, e)
			return out // the parser cannot resynchronise after a syntax error
		}
		if e := parseDoc(file, &root, errs); e != nil {
			out = append(out, e)
		}
	}
}

// parseDoc decodes one document: its envelope (apiVersion, kind), then the body
// into the kind's type, then the checks that need only this document.
func parseDoc(file string, root *yaml.Node, errs *ErrorList) *entry {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil
	}
	d := &doc{file: file, at: make(map[string]pos, 64), errs: errs}
	n, ok := d.resolve(root.Content[0])
	if !ok || isNull(n) {
		return nil // an empty document, e.g. only comments or a trailing ---
	}
	d.start = nodePos(n)
	if n.Kind != yaml.MappingNode {
		d.errAt(nodePos(n), "", "a document must be a mapping with apiVersion, kind and name, not %s", describe(n))
		return nil
	}
	var apiVersion, kind string
	var kindPos pos
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "apiVersion":
			apiVersion = v.Value
			if v.Kind != yaml.ScalarNode || apiVersion != APIVersion {
				got := fmt.Sprintf("%q", apiVersion)
				if v.Kind != yaml.ScalarNode {
					got = describe(v)
				}
				d.errAt(nodePos(v), "apiVersion", "%s is not a known apiVersion: use %s", got, APIVersion)
				return nil
			}
		case "kind":
			kind, kindPos = v.Value, nodePos(v)
		}
	}
	if apiVersion == "" {
		d.errAt(d.start, "apiVersion", "missing: every document starts with apiVersion: %s", APIVersion)
		return nil
	}
	e := &entry{d: d, kind: kind}
	var v reflect.Value
	switch kind {
	case KindMachine:
		e.machine = &Machine{Source: Source{file, d.start.line, d.start.col}}
		v = reflect.ValueOf(e.machine).Elem()
	case KindNetwork:
		e.network = &Network{Source: Source{file, d.start.line, d.start.col}}
		v = reflect.ValueOf(e.network).Elem()
	case KindImage:
		e.image = &Image{Source: Source{file, d.start.line, d.start.col}}
		v = reflect.ValueOf(e.image).Elem()
	case KindProfile:
		return parseProfile(d, n)
	case "":
		d.errAt(d.start, "kind", "missing: say which kind of document this is (%s)", strings.Join(kinds, ", "))
		return nil
	default:
		msg := fmt.Sprintf("%q is not a kind of document: use %s", kind, strings.Join(kinds, ", "))
		if s := suggest(kind, kinds); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		d.errAt(kindPos, "kind", "%s", msg)
		return nil
	}
	if e.machine != nil && hasKey(n, "profiles") {
		e.node = n // its profiles may be in other files
		return e
	}
	d.decodeStruct(n, v, "", []string{"apiVersion", "kind"})
	e.validate()
	if e.machine != nil {
		e.machine.Origins = d.origins()
	}
	return e
}

// build checks the documents against each other, applies the defaults and sorts
// the set. Cross-document checks run on defaulted documents (an address must not
// equal the defaulted gateway). lists are the error lists the documents' errors
// go to (one per file); build reports them all.
func build(entries []*entry, lists ...*ErrorList) (*Set, error) {
	applyProfiles(entries)
	entries = expandCopies(entries)
	for _, e := range entries {
		switch {
		case e.machine != nil:
			e.machine.Default()
		case e.network != nil:
			e.network.Default()
		case e.image != nil:
			e.image.Default()
		}
	}
	set := &Set{}
	byKind := map[string]map[string]*entry{}
	for _, e := range entries {
		names := byKind[e.kind]
		if names == nil {
			names = map[string]*entry{}
			byKind[e.kind] = names
		}
		name := e.name()
		if name == "" {
			continue // reported as missing
		}
		if first, dup := names[name]; dup {
			if e.machine != nil && (e.machine.Template != "" || first.machine.Template != "") {
				field, msg := copyClash(e, first)
				e.d.errorf(field, "%s", msg)
				continue
			}
			e.d.errorf("name", "%s %q is already defined at %s:%d", e.kind, name, first.d.file, first.d.start.line)
			continue
		}
		names[name] = e
		switch {
		case e.machine != nil:
			set.Machines = append(set.Machines, e.machine)
		case e.network != nil:
			set.Networks = append(set.Networks, e.network)
		case e.image != nil:
			set.Images = append(set.Images, e.image)
		case e.profile != nil:
			set.Profiles = append(set.Profiles, e.profile)
		}
	}
	sort.Slice(set.Machines, func(i, j int) bool { return set.Machines[i].Name < set.Machines[j].Name })
	sort.Slice(set.Networks, func(i, j int) bool { return set.Networks[i].Name < set.Networks[j].Name })
	sort.Slice(set.Images, func(i, j int) bool { return set.Images[i].Name < set.Images[j].Name })
	sort.Slice(set.Profiles, func(i, j int) bool { return set.Profiles[i].Name < set.Profiles[j].Name })

	crossCheck(set, byKind)
	set.defaultRefs()
	var errs ErrorList
	for _, l := range lists {
		errs = append(errs, *l...)
	}
	nameUsers(errs, byKind[KindProfile])
	if err := errs.err(); err != nil {
		return nil, err
	}
	return set, nil
}

// sortedKeys returns a map's keys in order (for messages listing names).
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
