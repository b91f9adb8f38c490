package spec

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// TestProvisionRules: one good and the bad inputs of credentials and files,
// each error with its field (positions as in TestRules).
func TestProvisionRules(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		want []string
	}{
		{"credentials of each source", m("credentials:", "  passwd.hashed-password.root: {value: \"$6$x\"}", "  a: {file: /etc/berth/a}", "  b: {env: B_KEY}", "  c: {credential: c}"), nil},
		{"empty literal", m("credentials: {motd: {value: \"\"}}"), nil},
		{"no source", m("credentials: {a: {}}"), []string{"credentials.a: has no value: give one of value, file, env or credential"}},
		{"two sources", m("credentials: {a: {value: x, env: X}}"), []string{"credentials.a: has more than one"}},
		{"bad name", m("credentials: {\"a/b\": {value: x}}"), []string{`credentials.a/b: "a/b" is not a credential name`}},
		{"relative file", m("credentials: {a: {file: a.key}}"), []string{`credentials.a.file: "a.key" is not an absolute path`}},
		{"bad env", m("credentials: {a: {env: 1X}}"), []string{`credentials.a.env: "1X" is not a variable name`}},
		{"bad credential name", m("credentials: {a: {credential: ..}}"), []string{`credentials.a.credential: ".." is not a credential name`}},
		{"unknown credential field", m("credentials: {a: {path: /x}}"), []string{"credentials.a: has no value", "credentials.a.path: unknown field"}},
		{"NUL in a literal", m("credentials: {a: {value: \"x\\0y\"}}"), []string{"credentials.a.value: contains a NUL byte"}},
		{"CREDENTIALS_DIRECTORY reserved", m("environment: {CREDENTIALS_DIRECTORY: /x}"), []string{"environment.CREDENTIALS_DIRECTORY: CREDENTIALS_DIRECTORY is set by berth"}},
		{"files", m("files:", "  - {path: /etc/motd, content: hi}", "  - {path: /root/.ssh/authorized_keys, source: /srv/keys, owner: \"0:0\", mode: \"0600\"}", "  - {path: /home/u/empty, content: \"\", owner: \"1000\"}"), nil},
		{"file without path", m("files: [{content: x}]"), []string{"files[0].path: missing"}},
		{"file relative", m("files: [{path: etc/motd, content: x}]"), []string{`files[0].path: "etc/motd" is not an absolute path`}},
		{"file is /", m("files: [{path: /, content: x}]"), []string{`files[0].path: "/" is a directory`}},
		{"file twice", m("files: [{path: /a, content: x}, {path: /a, content: y}]"), []string{"files[1].path: /a is already written by files[0]"}},
		{"content and source", m("files: [{path: /a, content: x, source: /b}]"), []string{"files[0]: has both content and source"}},
		{"neither", m("files: [{path: /a}]"), []string{"files[0]: has neither content nor source"}},
		{"owner names", m("files: [{path: /a, content: x, owner: \"root:root\"}]"), []string{`files[0].owner: "root:root" is not UID:GID`}},
		{"owner too large", m("files: [{path: /a, content: x, owner: \"4294967295\"}]"), []string{`files[0].owner: "4294967295" is not UID:GID`}},
		{"bad mode", m("files: [{path: /a, content: x, mode: \"999\"}]"), []string{"files[0].mode:"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("test.yaml", []byte(base+c.in))
			var got []string
			var el ErrorList
			if errors.As(err, &el) {
				for _, e := range el {
					if e.Line == 0 {
						t.Errorf("error without a line: %v", e)
					}
					got = append(got, e.Field+": "+e.Msg)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(got), len(c.want), strings.Join(got, "\n"))
			}
			for i, w := range c.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("error %d:\n got: %s\nwant: %s", i, got[i], w)
				}
			}
		})
	}
}

// TestSecretRedacted: a literal credential is in clear only in memory; its
// JSON (machine.json, the content hash), YAML and printed forms are a hash,
// which changes with the value, and survives a round trip.
func TestSecretRedacted(t *testing.T) {
	parse := func(v string) *Machine {
		t.Helper()
		set, err := Parse("test.yaml", []byte(base+m("credentials: {passwd.plaintext-password.root: {value: \""+v+"\"}}")))
		if err != nil {
			t.Fatal(err)
		}
		return set.Machines[0]
	}
	a, b := parse("hunter2"), parse("hunter3")
	js, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(js), "hunter2") || !strings.Contains(string(js), `"value":"sha256:`) {
		t.Errorf("machine JSON: %s", js)
	}
	if a.Hash() == b.Hash() {
		t.Error("a changed literal does not change the content hash")
	}
	if a.Hash() != parse("hunter2").Hash() {
		t.Error("the same literal gives another hash")
	}
	var back Machine
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	c := back.Credentials["passwd.plaintext-password.root"].Value
	if _, ok := c.Clear(); ok || c.Sum() != a.Credentials["passwd.plaintext-password.root"].Value.Sum() {
		t.Errorf("round trip: clear %v, sum %s", ok, c.Sum())
	}
	if back.Hash() != a.Hash() {
		t.Error("the definition read back from machine.json hashes differently")
	}
	v := a.Credentials["passwd.plaintext-password.root"].Value
	if s, _ := v.MarshalYAML(); strings.Contains(s.(string), "hunter2") {
		t.Error("YAML shows the value")
	}
	for _, f := range []string{v.String(), v.GoString()} {
		if strings.Contains(f, "hunter2") {
			t.Errorf("printed: %s", f)
		}
	}
	if got, ok := v.Clear(); !ok || got != "hunter2" {
		t.Errorf("Clear = %q, %v", got, ok)
	}
}
