package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// TestBrokenFiles loads a directory of eleven broken files (and a file with the
// image and network they refer to) and checks that every error is reported,
// each with its file, line and column: exactly the errors the files assert,
// each in an `# assert-error: LINE:COL: MESSAGE` comment right above its line.
func TestBrokenFiles(t *testing.T) {
	set, err := Load("testdata/broken", "testdata/valid-context.yaml")
	if set != nil || err == nil {
		t.Fatal("broken definitions loaded without error")
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error is %T, not an ErrorList", err)
	}
	files := map[string]bool{}
	for _, e := range list {
		files[filepath.Base(e.File)] = true
		if e.Line == 0 {
			t.Errorf("no line: %v", e)
		}
		if e.Col == 0 && !strings.Contains(e.Msg, "invalid YAML") {
			t.Errorf("no column: %v", e)
		}
	}
	entries, _ := os.ReadDir("testdata/broken")
	if len(entries) != 11 {
		t.Errorf("testdata/broken has %d files, want 11", len(entries))
	}
	for _, de := range entries {
		if !files[de.Name()] {
			t.Errorf("no error reported for %s", de.Name())
		}
	}
	want := strings.Join(testenv.AssertedErrors(t, "testdata/broken"), "\n")
	if d := testenv.Diff(want, err.Error()); d != "" {
		t.Errorf("the errors differ from what testdata/broken asserts:\n%s", d)
	}
}

// TestExamples loads examples/ and pins its defaulted form: a change of a default
// shows up here (and changes every machine's hash, which restarts machines).
func TestExamples(t *testing.T) {
	set, err := Load("../examples")
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Machines) < 4 || len(set.Networks) < 1 || len(set.Images) < 1 {
		t.Errorf("examples: %d machines, %d networks, %d images", len(set.Machines), len(set.Networks), len(set.Images))
	}
	b, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Golden(t, "testdata/examples.golden.json", append(b, '\n'))

	// Every example carries the modeline that points editors at the schema.
	for _, f := range mustGlob(t, "../examples/*/*.yaml") {
		b, _ := os.ReadFile(f)
		if !bytes.HasPrefix(b, []byte("# yaml-language-server: $schema=../../berth.schema.json\n")) {
			t.Errorf("%s: first line is not the yaml-language-server modeline", f)
		}
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("glob %s: %v (%d files)", pattern, err, len(files))
	}
	return files
}

// TestSchema pins `berth schema` (the committed ../berth.schema.json that the
// examples' modelines use is its golden file) and checks the examples, and some
// wrong documents, against it with an independent JSON Schema implementation.
func TestSchema(t *testing.T) {
	testenv.Golden(t, "../berth.schema.json", Schema())

	c := jsonschema.NewCompiler()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource(SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(SchemaID)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, data []byte, wantValid bool) {
		t.Helper()
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			var v any
			if err := dec.Decode(&v); err != nil {
				break
			}
			// Through JSON, so the instance has JSON's types (float64, map[string]any).
			b, _ := json.Marshal(v)
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			err = sch.Validate(inst)
			if wantValid && err != nil {
				t.Errorf("%s document %d does not match the schema: %v", name, i, err)
			}
			if !wantValid && err == nil {
				t.Errorf("%s document %d matches the schema, but should not", name, i)
			}
		}
	}
	for _, f := range mustGlob(t, "../examples/*/*.yaml") {
		b, _ := os.ReadFile(f)
		check(f, b, true)
	}
	for _, in := range []string{
		m("hostnme: x"),
		m("resources: {cpus: many}"),
		m("state: started"),
		m("network: {name: lan, ports: [{hostPort: 80, protocol: sctp}]}"),
		m("mounts: [{source: /a}]"),
		"apiVersion: berth/v1\nkind: Machine\nimage: x\n",
		"apiVersion: berth/v1\nkind: Image\nname: x\ndirectory: /x\ndebootstrap: {suite: bookworm}\n",
		"apiVersion: berth/v1\nkind: Network\nname: x\n",
		"apiVersion: berth/v1\nkind: Gadget\nname: x\n",
	} {
		check(fmt.Sprintf("%q", in), []byte(in), false)
	}
	for _, in := range []string{
		m("resources: {memoryMax: 1.5G, cpus: 2}", "network: {name: lan, ports: [80, '127.0.0.1:8080:80/udp', {hostPort: 1}]}", "privateUsers: false", "stopTimeout: 1m30s"),
		m("network: lan", "mounts: [{type: tmpfs, target: /t, mode: '1777', size: 1024}]", "environment: {A: 1, B: true}"),
	} {
		check(fmt.Sprintf("%q", in), []byte(in), true)
	}
}

// TestSchemaDocumented checks that every field of the language has a description,
// which the schema and docs/definitions.md (TestDocsFields) show.
func TestSchemaDocumented(t *testing.T) {
	var s struct {
		Definitions map[string]struct {
			Properties map[string]map[string]any `json:"properties"`
		} `json:"definitions"`
	}
	if err := json.Unmarshal(Schema(), &s); err != nil {
		t.Fatal(err)
	}
	for def, d := range s.Definitions {
		for name, p := range d.Properties {
			if name == "apiVersion" || name == "kind" {
				continue
			}
			if p["description"] == nil {
				t.Errorf("%s.%s has no doc tag", def, name)
			}
		}
	}
}

// TestHashStable checks that the hash sees meaning only: not key order, comments,
// flow or block style, spelled-out defaults, the file name or the position.
func TestHashStable(t *testing.T) {
	hash := func(file, body string) string {
		t.Helper()
		set, err := Parse(file, []byte(base+body))
		if err != nil {
			t.Fatal(err)
		}
		return set.Machine("m").Hash()
	}
	a := hash("a.yaml", m("network: {name: lan, ports: ['8080:80']}", "resources: {memoryMax: 512M}", "capabilities: {add: [NET_ADMIN, sys_time]}", "environment: {A: x, B: y}"))
	same := []string{
		hash("b.yaml", "# a comment\n\n"+m("resources:\n  memoryMax: 536870912  # bytes", "environment: {B: y, A: x}", "capabilities: {add: [CAP_SYS_TIME, net_admin, NET_ADMIN]}", "network:\n  ports:\n    - {hostPort: 8080, machinePort: 80, protocol: tcp}\n  name: lan")),
		hash("c.yaml", "---\n"+m("state: running", "boot: true", "hostname: m", "stopTimeout: 30s", "restart: {policy: on-failure}", "privateUsers: pick", "root: {strategy: auto, onImageChange: keep}", "network: {name: lan, ports: ['8080:80/tcp']}", "resources: {memoryMax: 0.5G}", "capabilities: {add: [NET_ADMIN, SYS_TIME]}", "environment: {A: x, B: y}")),
	}
	for i, h := range same {
		if h != a {
			t.Errorf("variant %d hashes differently: %s vs %s", i, h, a)
		}
	}
	differ := []string{
		m("network: {name: lan, ports: ['8081:80']}", "resources: {memoryMax: 512M}", "capabilities: {add: [NET_ADMIN, sys_time]}", "environment: {A: x, B: y}"),
		m("network: {name: lan, ports: ['8080:80']}", "resources: {memoryMax: 513M}", "capabilities: {add: [NET_ADMIN, sys_time]}", "environment: {A: x, B: y}"),
		m("network: {name: lan, ports: ['8080:80']}", "resources: {memoryMax: 512M}", "capabilities: {add: [NET_ADMIN]}", "environment: {A: x, B: y}"),
		m("network: {name: lan, ports: ['8080:80']}", "resources: {memoryMax: 512M}", "capabilities: {add: [NET_ADMIN, sys_time]}", "environment: {A: x, B: z}"),
		m("network: {name: lan, ports: ['8080:80']}", "resources: {memoryMax: 512M}", "capabilities: {add: [NET_ADMIN, sys_time]}", "environment: {A: x, B: y}", "state: stopped"),
	}
	for i, body := range differ {
		if h := hash("a.yaml", body); h == a {
			t.Errorf("change %d does not change the hash", i)
		}
	}
	if len(a) != 64 {
		t.Errorf("hash %q is not 64 hex digits", a)
	}
	// Networks and images hash their defaulted form too.
	s1, _ := Parse("x", []byte(base))
	s2, _ := Parse("y", []byte(strings.ReplaceAll(base, "subnet: 10.87.0.0/24", "subnet: 10.87.0.0/24\ngateway: 10.87.0.1\nnat: true\nbridge: br-lan")))
	if s1.Network("lan").Hash() != s2.Network("lan").Hash() {
		t.Error("spelling out a network's defaults changes its hash")
	}
	if s1.Image("img").Hash() == s1.Network("lan").Hash() {
		t.Error("image and network hash alike")
	}
}

// TestDefaults checks the defaulted form of a minimal machine and network.
func TestDefaults(t *testing.T) {
	set, err := Parse("x.yaml", []byte(base+m("network: {name: lan, address: 10.87.0.7, ports: [80]}", "mounts: [{source: /a, target: /a}, {type: tmpfs, target: /t}]")+
		"---\n"+strings.Replace(m("command: [/bin/true]"), "name: m", "name: app", 1)+
		n("name: a-network-with-a-long-name", "subnet: 10.99.0.0/16", "subnet6: 'fd99::/64'", "dns: [1.1.1.1]")+
		img("name: deb", "debootstrap: {suite: bookworm}")))
	if err != nil {
		t.Fatal(err)
	}
	mm := set.Machine("m")
	checks := []struct {
		what      string
		got, want any
	}{
		{"hostname", mm.Hostname, "m"},
		{"state", mm.State, StateRunning},
		{"boot", mm.Boot, true},
		{"restart", mm.Restart, Restart{Policy: RestartOnFailure, Backoff: DefaultBackoff, MaxBackoff: DefaultMaxBackoff}},
		{"stopTimeout", mm.StopTimeout.D(), 30 * time.Second},
		{"address", mm.Network.Address.String(), "10.87.0.7/24"},
		{"port", mm.Network.Ports[0], Port{HostPort: 80, MachinePort: 80, Protocol: TCP}},
		{"bind type", mm.Mounts[0].Type, MountBind},
		{"tmpfs mode", mm.Mounts[1].Mode, FileMode(0o755)},
		{"privateUsers", mm.PrivateUsers, PrivateUsersPick},
		{"root", mm.Root, Root{Strategy: RootAuto, OnImageChange: ImageChangeKeep}},
		{"resolvConf", mm.ResolvConf, ResolvConfNetwork},
		{"app boot", set.Machine("app").Boot, false},
		{"app network", set.Machine("app").Network.Name, NetworkNone},
		{"app resolvConf", set.Machine("app").ResolvConf, ResolvConfOff},
		{"bridge", set.Network("lan").Bridge, "br-lan"},
		{"gateway", set.Network("lan").Gateway.String(), "10.87.0.1"},
		{"nat", set.Network("lan").Masquerade(), true},
		{"resolver", set.Network("lan").ResolverOn(), true},
		{"resolver domain", set.Network("lan").Resolver.Domain, DefaultDomain},
		{"long bridge", len(set.Network("a-network-with-a-long-name").Bridge) <= 15, true},
		{"gateway6", set.Network("a-network-with-a-long-name").Gateway6.String(), "fd99::1"},
		{"mirror", set.Image("deb").Debootstrap.Mirror, DefaultMirror},
		{"variant", set.Image("deb").Debootstrap.Variant, "minbase"},
		{"source", set.Image("deb").Source.File, "x.yaml"},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}
	// Default is idempotent, and Set.Default gives documents built in Go the same form.
	before := mm.Hash()
	set.Default()
	if mm.Hash() != before {
		t.Error("a second Default changed the machine")
	}
	byHand := &Set{
		Machines: []*Machine{{Name: "m", Image: "img", Network: MachineNetwork{Name: "lan"}}},
		Networks: []*Network{{Name: "lan"}},
	}
	byHand.Networks[0].Subnet = set.Network("lan").Subnet
	byHand.Default()
	if byHand.Machines[0].ResolvConf != ResolvConfNetwork || byHand.Networks[0].Bridge != "br-lan" {
		t.Errorf("Set.Default: %+v %+v", byHand.Machines[0], byHand.Networks[0])
	}
}

func TestBridgeName(t *testing.T) {
	for name, want := range map[string]string{"lan": "br-lan", "twelve-chars": "br-twelve-chars"} {
		if got := BridgeName(name); got != want {
			t.Errorf("BridgeName(%q) = %q, want %q", name, got, want)
		}
	}
	a, b := BridgeName("a-long-network-name-1"), BridgeName("a-long-network-name-2")
	if a == b || len(a) != 15 || !strings.HasPrefix(a, "br-a-lo") {
		t.Errorf("long names: %q %q", a, b)
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		err  bool
	}{
		{"0", 0, false}, {"65536", 65536, false}, {"1024K", 1 << 20, false}, {"512M", 512 << 20, false},
		{"2G", 2 << 30, false}, {"1.5G", 3 << 29, false}, {"1T", 1 << 40, false}, {"1P", 1 << 50, false},
		{"512m", 512 << 20, false}, {"512MiB", 512 << 20, false}, {"512MB", 512 << 20, false}, {"100B", 100, false},
		{"1048576", 1 << 20, false}, {"64k", 64 << 10, false}, {"1GB", 1 << 30, false}, {"lots", 0, true},
		{"", 0, true}, {"M", 0, true}, {"-1G", 0, true}, {"1X", 0, true}, {"1e3", 0, true}, {"0x10", 0, true},
		{"1.5.5G", 0, true}, {"99999999999P", 0, true}, {"NaN", 0, true}, {"1 G", 0, true}, {"5iB", 0, true},
	}
	for _, c := range cases {
		got, err := ParseSize(c.in)
		if (err != nil) != c.err || (!c.err && got.Bytes() != c.want) {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", c.in, got, err, c.want, c.err)
		}
	}
	for _, s := range []Size{0, 1, 1024, 512 << 20, 3 << 29, 1<<30 + 1} {
		back, err := ParseSize(s.String())
		if err != nil || back != s {
			t.Errorf("%d → %q → %d, %v", s, s.String(), back, err)
		}
	}
}

func TestParseDuration(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"30s", 30 * time.Second, false}, {"1m30s", 90 * time.Second, false}, {"500ms", 500 * time.Millisecond, false},
		{"2h", 2 * time.Hour, false}, {"90", 90 * time.Second, false}, {"0", 0, false},
		{"2min", 0, true}, {"-1s", 0, true}, {"s", 0, true}, {"", 0, true},
	}
	for _, c := range cases {
		got, err := ParseDuration(c.in)
		if (err != nil) != c.err || (!c.err && got.D() != c.want) {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, error %v", c.in, got, err, c.want, c.err)
		}
	}
}

func TestParsePort(t *testing.T) {
	cases := []struct {
		in, want string // want is the String() form, "" for an error
	}{
		{"80", "80"}, {"8080:80", "8080:80"}, {"8080:80/udp", "8080:80/udp"}, {"53/udp", "53/udp"},
		{"127.0.0.1:8080:80", "127.0.0.1:8080:80"}, {"[::1]:8080:80/tcp", "[::1]:8080:80/tcp"},
		{"0:80", ""}, {"65536", ""}, {"a:b", ""}, {"80/icmp", ""}, {"::1:80:80", ""}, {"[::1]:80", ""},
		{"[127.0.0.1]:80:80", ""}, {"1.2.3:80:80", ""}, {"", ""}, {"[::1", ""}, {"1:2:3:4", ""},
	}
	for _, c := range cases {
		p, err := ParsePort(c.in)
		got := ""
		if err == nil {
			got = p.String()
		}
		if got != c.want {
			t.Errorf("ParsePort(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestParseFileMode(t *testing.T) {
	for in, want := range map[string]FileMode{"0755": 0o755, "1777": 0o1777, "0o700": 0o700, "7": 7, "07777": 0o7777} {
		if got, err := ParseFileMode(in); err != nil || got != want {
			t.Errorf("ParseFileMode(%q) = %o, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "8", "17777", "rwx", "0x7"} {
		if _, err := ParseFileMode(in); err == nil {
			t.Errorf("ParseFileMode(%q) accepted", in)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	set, err := Load("../examples")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(set)
	var back Set
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for i, m := range set.Machines {
		if back.Machines[i].Hash() != m.Hash() {
			t.Errorf("machine %s changes through JSON", m.Name)
		}
	}
}

func TestLoadPaths(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a/img.yml", base)
	write("b/m.yaml", m())
	write(".hidden/x.yaml", "garbage: [")
	write("b/.swap.yaml", "garbage: [")
	write("b/readme.txt", "not yaml")
	set, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Machines) != 1 || set.Machine("m") == nil || set.Machine("x") != nil || set.Image("img") == nil {
		t.Errorf("loaded %+v", set)
	}
	// A file given twice (directly and through its directory) is read once.
	if _, err := Load(dir, filepath.Join(dir, "b/m.yaml")); err != nil {
		t.Errorf("file named twice: %v", err)
	}
	for _, c := range []struct {
		paths []string
		want  string
	}{
		{nil, "no definition files given"},
		{[]string{filepath.Join(dir, "nope")}, "nope: stat: no such file or directory"},
		{[]string{filepath.Join(dir, ".hidden/..", "b", "readme.txt")}, "cannot be"},
		{[]string{t.TempDir()}, "no *.yaml or *.yml files in this directory"},
	} {
		_, err := Load(c.paths...)
		if c.want == "cannot be" {
			// A file given by name is read whatever its suffix: here it is not YAML.
			if err == nil {
				t.Errorf("Load(%v) accepted a text file", c.paths)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Load(%v) = %v, want %q", c.paths, err, c.want)
		}
	}
}

// TestReadFiles: the walker berthd's directory sources use is Load's, 16 MiB
// cap included; unlike Load it takes an empty tree as declaring nothing.
func TestReadFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("b/m.yaml", []byte(m()))
	write("a/img.yml", []byte(base))
	write(".hidden/x.yaml", []byte("garbage: ["))
	write("b/readme.txt", []byte("not yaml"))
	files, err := ReadFiles(dir)
	if err != nil || len(files) != 2 || files[0].Name != filepath.Join(dir, "a/img.yml") || string(files[1].Data) != m() {
		t.Fatalf("ReadFiles = %v, %v", files, err)
	}
	if files, err := ReadFiles(filepath.Join(dir, "b/readme.txt")); err != nil || len(files) != 1 {
		t.Errorf("a file given by name: %v, %v", files, err)
	}
	if files, err := ReadFiles(t.TempDir()); err != nil || len(files) != 0 {
		t.Errorf("empty tree: %v, %v", files, err)
	}
	if _, err := ReadFiles(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing path: %v, want fs.ErrNotExist", err)
	}
	big := bytes.Repeat([]byte("# padding\n"), (maxFileSize/10)+1)
	write("c/big.yaml", big)
	if _, err := ReadFiles(dir); err == nil || !strings.Contains(err.Error(), "big.yaml: larger than 16 MiB") {
		t.Errorf("ReadFiles of a tree with a 16 MiB file: %v", err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "big.yaml: larger than 16 MiB") {
		t.Errorf("Load of a tree with a 16 MiB file: %v", err)
	}
	if _, err := ParseFiles([]File{{Name: "repo:big.yaml", Data: big}}); err == nil || !strings.Contains(err.Error(), "repo:big.yaml: larger than 16 MiB") {
		t.Errorf("ParseFiles of a 16 MiB file: %v", err)
	}
}

// FuzzParse holds the decoder to never panicking and to a consistent result: a
// set or an ErrorList whose every error names the file.
func FuzzParse(f *testing.F) {
	for _, p := range append(mustGlobF(f, "../examples/*/*.yaml"), mustGlobF(f, "testdata/broken/*.yaml")...) {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Add([]byte(base + m("network: {name: lan, ports: ['[::1]:80:80/udp']}", "mounts: [&a {source: /a, target: /a}, *a]")))
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte(base + "apiVersion: berth/v1\nkind: Profile\nname: p\nnetwork: {name: lan, ports: [80]}\nresources: &r {cpus: 1}\n---\n" +
		m("profiles: [p, q]", "network: lan", "resources: {memoryMax: 1G}")))
	f.Add([]byte("apiVersion: berth/v1\nkind: Machine\nname: &x m\nimage: *x\nresources: {cpus: .inf}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := Parse("f.yaml", data)
		if err == nil {
			if set == nil {
				t.Fatal("nil set without error")
			}
			for _, m := range set.Machines {
				_ = m.Hash()
			}
			return
		}
		var list ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error %T %v is not a non-empty ErrorList", err, err)
		}
		for _, e := range list {
			if e.File != "f.yaml" || e.Msg == "" {
				t.Fatalf("bad error %+v", e)
			}
		}
	})
}

func mustGlobF(f *testing.F, pattern string) []string {
	files, _ := filepath.Glob(pattern)
	return files
}

// BenchmarkLoad1000 loads 1,000 machine definitions from 1,000 files (plus their
// image and network), the size of a large host's tree.
func BenchmarkLoad1000(b *testing.B) {
	dir := b.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	write("base.yaml", "apiVersion: berth/v1\nkind: Image\nname: img\ndebootstrap: {suite: bookworm, packages: [systemd, dbus]}\n---\n"+
		"apiVersion: berth/v1\nkind: Network\nname: lan\nsubnet: 10.80.0.0/16\n")
	for i := range 1000 {
		write(fmt.Sprintf("m%04d.yaml", i), fmt.Sprintf(`# yaml-language-server: $schema=../berth.schema.json
apiVersion: berth/v1
kind: Machine
name: m%04d
image: img
network:
  name: lan
  address: 10.80.%d.%d
  ports:
    - %d:80
mounts:
  - source: /srv/m%04d
    target: /var/www
    readOnly: true
  - type: tmpfs
    target: /scratch
    size: 64M
environment:
  ROLE: web
  INDEX: "%d"
resources:
  memoryMax: 512M
  cpus: 0.5
  pidsMax: 512
restart:
  policy: always
capabilities:
  drop: [SYS_TIME]
`, i, i/200, i%200+2, 10000+i, i, i))
	}
	b.ResetTimer()
	for b.Loop() {
		set, err := Load(dir)
		if err != nil {
			b.Fatal(err)
		}
		if len(set.Machines) != 1000 {
			b.Fatalf("%d machines", len(set.Machines))
		}
	}
}

// TestParseFiles checks that in-memory files (a Git source) form one set as files
// on disk do: references resolve across them and names are unique across them.
func TestParseFiles(t *testing.T) {
	set, err := ParseFiles([]File{{"repo:base.yaml", []byte(base)}, {"repo:m.yaml", []byte(m("network: lan"))}})
	if err != nil || set.Machine("m") == nil || set.Machine("m").Source.File != "repo:m.yaml" {
		t.Fatalf("ParseFiles: %v", err)
	}
	_, err = ParseFiles([]File{{"repo:base.yaml", []byte(base)}, {"a.yaml", []byte(m())}, {"b.yaml", []byte(m())}})
	if err == nil || !strings.Contains(err.Error(), `b.yaml:3:7: name: Machine "m" is already defined at a.yaml:1`) {
		t.Errorf("duplicate across files: %v", err)
	}
}
