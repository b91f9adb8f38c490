package plan

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/store"
	"github.com/berthd/berth/spec"
)

// TestPlanCredentialsAndFiles: the definition a machine runs with comes back
// from machine.json with its literal credentials hashed; it still matches the
// declared one, a changed credential needs a restart and is shown only as
// <redacted, changed>, and a change to files restarts nothing.
func TestPlanCredentialsAndFiles(t *testing.T) {
	const secret, secret2 = "s3cret-value", "other-s3cret"
	for _, c := range []struct {
		name   string
		edit   func(declared *spec.Machine)
		want   []string
		detail string
	}{
		{"unchanged literal", func(*spec.Machine) {}, nil, ""},
		{"changed literal", func(m *spec.Machine) {
			m.Credentials["passwd.plaintext-password.root"] = spec.Credential{Value: secret2}
		}, []string{"restart machine web", "update rules berth"}, "credentials.passwd.plaintext-password.root: <redacted, changed>"},
		{"literal became a file", func(m *spec.Machine) {
			m.Credentials["passwd.plaintext-password.root"] = spec.Credential{File: "/etc/berth/root.pw"}
		}, []string{"restart machine web", "update rules berth"}, "credentials.passwd.plaintext-password.root: <redacted, changed>"},
		{"credential added", func(m *spec.Machine) {
			m.Credentials["login.motd"] = spec.Credential{Env: "MOTD"}
		}, []string{"restart machine web", "update rules berth"}, "credentials.login.motd: added"},
		{"credential removed", func(m *spec.Machine) {
			m.Credentials = nil
		}, []string{"restart machine web", "update rules berth"}, "credentials.passwd.plaintext-password.root: removed"},
		{"files changed", func(m *spec.Machine) {
			m.Files = []spec.ProvisionFile{{Path: "/etc/motd", Content: "new", Mode: spec.DefaultFileMode}}
		}, []string{"update machine web"}, "written before a root's first boot only"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := mustParse(t, planBase)
			web := d.Machine("web")
			web.Credentials = map[string]spec.Credential{"passwd.plaintext-password.root": {Value: secret}}
			o := converged(d)
			// What observe reads back from machine.json.
			b, err := json.Marshal(web)
			if err != nil {
				t.Fatal(err)
			}
			var running spec.Machine
			if err := json.Unmarshal(b, &running); err != nil {
				t.Fatal(err)
			}
			o.Machines["web"].Spec = &running
			declared := *web
			declared.Credentials = map[string]spec.Credential{}
			for k, v := range web.Credentials {
				declared.Credentials[k] = v
			}
			c.edit(&declared)
			*web = declared
			p := Build(d, o, map[string]store.Record{}, Options{})
			if got := ops(p); strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Fatalf("actions %v, want %v", got, c.want)
			}
			all, _ := json.Marshal(p)
			for _, s := range []string{secret, secret2} {
				if strings.Contains(string(all), s) {
					t.Errorf("the plan shows a credential's value: %s", all)
				}
			}
			if c.detail != "" && !planHas(p, c.detail) {
				t.Errorf("no action says %q: %s", c.detail, all)
			}
		})
	}
}

func planHas(p *api.Plan, s string) bool {
	for _, a := range p.Actions {
		if strings.Contains(a.Reason, s) || strings.Contains(strings.Join(a.Changes, "\n"), s) {
			return true
		}
	}
	return false
}
