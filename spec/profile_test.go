package spec

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/testenv"
)

// profileA and profileB set overlapping fields, so the order they are listed
// in shows.
const profileA = `apiVersion: berth/v1
kind: Profile
name: a
resources: {memoryMax: 512M, cpus: 1}
environment: {A: "1", B: "1"}
mounts: [{type: tmpfs, target: /a}]
capabilities: {add: [NET_ADMIN]}
network: {name: lan, ports: ["8080:80"]}
---
`

const profileB = `apiVersion: berth/v1
kind: Profile
name: b
resources: {cpus: 2}
environment: {B: "2"}
mounts: [{type: tmpfs, target: /b}]
---
`

func mustLoadProfiles(t *testing.T, machine string) *Machine {
	t.Helper()
	set, err := Parse("p.yaml", []byte(base+profileA+profileB+machine))
	if err != nil {
		t.Fatal(err)
	}
	return set.Machines[0]
}

// TestProfileMerge: profiles apply in order, the machine's own fields last;
// mappings merge key by key, lists and scalars replace.
func TestProfileMerge(t *testing.T) {
	m := mustLoadProfiles(t, "apiVersion: berth/v1\nkind: Machine\nname: web\nimage: img\nprofiles: [a, b]\nenvironment: {C: \"3\"}\n")
	if m.Resources.MemoryMax != 512<<20 || m.Resources.CPUs != 2 {
		t.Errorf("resources %+v: want memoryMax from a, cpus from b", m.Resources)
	}
	if want := map[string]string{"A": "1", "B": "2", "C": "3"}; !maps.Equal(m.Environment, want) {
		t.Errorf("environment %v, want %v", m.Environment, want)
	}
	if len(m.Mounts) != 1 || m.Mounts[0].Target != "/b" {
		t.Errorf("mounts %+v: b's list replaces a's whole", m.Mounts)
	}
	if !slices.Equal(m.Capabilities.Add, []string{"CAP_NET_ADMIN"}) {
		t.Errorf("capabilities.add %v: a's, which b does not set", m.Capabilities.Add)
	}

	m = mustLoadProfiles(t, "apiVersion: berth/v1\nkind: Machine\nname: web\nimage: img\nprofiles: [b, a]\nmounts: []\n")
	if m.Resources.CPUs != 1 || m.Environment["B"] != "1" {
		t.Errorf("profiles [b, a]: cpus %v, B=%s; want a's (listed last)", m.Resources.CPUs, m.Environment["B"])
	}
	if len(m.Mounts) != 0 {
		t.Errorf("mounts: [] in the machine leaves %+v", m.Mounts)
	}

	// network: NAME in the machine is {name: NAME}: the profile's ports stay.
	m = mustLoadProfiles(t, "apiVersion: berth/v1\nkind: Machine\nname: web\nimage: img\nprofiles: [a]\nnetwork: lan\n")
	if m.Network.Name != "lan" || len(m.Network.Ports) != 1 {
		t.Errorf("network %+v: want lan with a's port", m.Network)
	}
	// And the other way round: a profile's network: NAME, the machine's address.
	set, err := Parse("p.yaml", []byte(base+"apiVersion: berth/v1\nkind: Profile\nname: c\nnetwork: lan\n---\n"+
		"apiVersion: berth/v1\nkind: Machine\nname: web\nprofiles: [c]\nnetwork: {address: 10.87.0.9}\n"))
	if err == nil || !strings.Contains(err.Error(), "image: missing: name the Image the machine's root is made from (here or in one of its profiles: c)") {
		t.Errorf("a machine without an image, in it or its profiles: %v", err)
	}
	if set, err = Parse("p.yaml", []byte(base+"apiVersion: berth/v1\nkind: Profile\nname: c\nnetwork: lan\nimage: img\n---\n"+
		"apiVersion: berth/v1\nkind: Machine\nname: web\nprofiles: [c]\nnetwork: {address: 10.87.0.9}\n")); err != nil {
		t.Fatal(err)
	}
	if n := set.Machines[0].Network; n.Name != "lan" || n.Address.Addr().String() != "10.87.0.9" {
		t.Errorf("network %+v: want the profile's lan with the machine's address", n)
	}
}

// TestProfileOrigins: each field says where it was written: in the machine,
// in a profile (its file and line), or nowhere (a default).
func TestProfileOrigins(t *testing.T) {
	m := mustLoadProfiles(t, "apiVersion: berth/v1\nkind: Machine\nname: web\nimage: img\nprofiles: [a, b]\nresources: {pidsMax: 100}\n")
	for path, want := range map[string]string{
		"name":                "p.yaml:29",
		"resources":           "p.yaml:32",
		"resources.pidsMax":   "p.yaml:32",
		"resources.memoryMax": "profile a (p.yaml:14)",
		"resources.cpus":      "profile b (p.yaml:23)",
		"environment.A":       "profile a (p.yaml:15)",
		"environment":         "profile b (p.yaml:24)",
		"mounts":              "profile b (p.yaml:25)",
	} {
		if got := m.Origins[path].String(); got != want {
			t.Errorf("origin of %s: %s, want %s", path, got, want)
		}
	}
	if o, ok := m.Origins["restart"]; ok {
		t.Errorf("restart (a default) has an origin: %v", o)
	}
}

// TestProfileHash: a machine's hash is over its effective definition. A
// change to a profile changes the hashes of exactly the machines using it;
// moving a field between a profile and a machine changes none.
func TestProfileHash(t *testing.T) {
	doc := func(name, fields string) string {
		return "apiVersion: berth/v1\nkind: Machine\nname: " + name + "\nimage: img\n" + fields + "\n---\n"
	}
	machines := doc("web", "profiles: [small]") + doc("db", "profiles: [small]") + doc("solo", "resources: {memoryMax: 512M}") +
		"apiVersion: berth/v1\nkind: Profile\nname: small\n"
	hashes := func(defs string) map[string]string {
		t.Helper()
		set, err := Parse("h.yaml", []byte(base+defs))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, m := range set.Machines {
			out[m.Name] = m.Hash()
		}
		return out
	}
	base := hashes(machines + "resources: {memoryMax: 512M}\n")
	changed := hashes(machines + "resources: {memoryMax: 1G}\n")
	for name, want := range map[string]bool{"web": true, "db": true, "solo": false} {
		if got := base[name] != changed[name]; got != want {
			t.Errorf("%s: hash changed %v after the profile's memoryMax changed, want %v", name, got, want)
		}
	}
	// solo's memoryMax written in a profile of its own, web's and db's in
	// their documents: the same machines.
	moved := hashes(strings.ReplaceAll(machines, "profiles: [small]\n", "profiles: [small]\nresources: {memoryMax: 512M}\n") +
		"---\napiVersion: berth/v1\nkind: Profile\nname: half\nresources: {memoryMax: 512M}\n")
	moved2 := hashes(strings.Replace(machines, "resources: {memoryMax: 512M}\n", "profiles: [half]\n", 1) +
		"---\napiVersion: berth/v1\nkind: Profile\nname: half\nresources: {memoryMax: 512M}\n")
	if !maps.Equal(base, moved) || moved["solo"] != moved2["solo"] {
		t.Errorf("moving fields between profiles and machines changed hashes:\n%v\n%v\n%v", base, moved, moved2)
	}
}

// TestProfileErrors loads testdata/profile-errors: an unknown profile (with a
// suggestion), one listed twice, mistakes in profiles reported in the
// profile's file naming the machines that use it (one error for all of
// them), a profile that lists profiles, and a name defined twice.
func TestProfileErrors(t *testing.T) {
	_, err := Load("testdata/profile-errors")
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error %v, want an ErrorList", err)
	}
	want := strings.Join(testenv.AssertedErrors(t, "testdata/profile-errors"), "\n")
	if d := testenv.Diff(want, err.Error()); d != "" {
		t.Errorf("the errors differ from what testdata/profile-errors asserts:\n%s", d)
	}
	for _, e := range list {
		if e.Profile == "small" && !slices.Equal(e.Machines, []string{"db", "web"}) {
			t.Errorf("%v: machines %q, want [db web]", e, e.Machines)
		}
	}
}

// BenchmarkLoad1000Profiles is BenchmarkLoad1000 with what the machines have
// in common in a profile: 1,000 machines merged with it, each decoded once
// every file is read.
func BenchmarkLoad1000Profiles(b *testing.B) {
	dir := b.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	write("base.yaml", "apiVersion: berth/v1\nkind: Image\nname: img\ndebootstrap: {suite: bookworm, packages: [systemd, dbus]}\n---\n"+
		"apiVersion: berth/v1\nkind: Network\nname: lan\nsubnet: 10.80.0.0/16\n---\n"+
		"apiVersion: berth/v1\nkind: Profile\nname: web\nimage: img\nnetwork: {name: lan}\n"+
		"environment: {ROLE: web}\nresources: {memoryMax: 512M, cpus: 0.5, pidsMax: 512}\nrestart: {policy: always}\ncapabilities: {drop: [SYS_TIME]}\n")
	for i := range 1000 {
		write(fmt.Sprintf("m%04d.yaml", i), fmt.Sprintf(`apiVersion: berth/v1
kind: Machine
name: m%04d
profiles: [web]
network:
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
  INDEX: "%d"
`, i, i/200, i%200+2, 10000+i, i, i))
	}
	b.ResetTimer()
	for b.Loop() {
		set, err := Load(dir)
		if err != nil {
			b.Fatal(err)
		}
		if len(set.Machines) != 1000 || set.Machines[0].Resources.MemoryMax != 512<<20 {
			b.Fatalf("%d machines", len(set.Machines))
		}
	}
}

// TestProfileAliasCycle: a mapping that contains itself, in a profile and in
// the machine, ends in errors, not in a merge that never ends.
func TestProfileAliasCycle(t *testing.T) {
	_, err := Parse("c.yaml", []byte(base+profileA+
		"apiVersion: berth/v1\nkind: Profile\nname: loop\nresources: &r {memoryMax: 1G, cpus: *r}\n---\n"+
		"apiVersion: berth/v1\nkind: Machine\nname: web\nimage: img\nprofiles: [loop]\nresources: &s {cpus: *s}\n"))
	if err == nil || !strings.Contains(err.Error(), "resources.cpus") {
		t.Errorf("cyclic aliases: %v", err)
	}
}
