package plan

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/machined/store"
)

// profileDefs are two machines that use profile small and one that does not;
// the profile is the part a test edits.
const profileDefs = `apiVersion: berth/v1
kind: Image
name: deb
debootstrap: {suite: bookworm}
---
apiVersion: berth/v1
kind: Machine
name: web
image: deb
profiles: [small]
---
apiVersion: berth/v1
kind: Machine
name: db
image: deb
profiles: [small]
resources: {cpus: 2}
---
apiVersion: berth/v1
kind: Machine
name: solo
image: deb
resources: {memoryMax: 512M}
---
apiVersion: berth/v1
kind: Profile
name: small
`

// TestPlanProfileChange: after a profile changes, the plan has an action for
// every machine that uses it, and only for those, each with what it needs: a
// limit changes live, a change the guest was started with restarts it.
func TestPlanProfileChange(t *testing.T) {
	before := mustParse(t, profileDefs+"resources: {memoryMax: 512M}\ninitArgs: [quiet]\n")
	for _, c := range []struct {
		name, profile string
		want          []string
		detail        string
	}{
		{"limit: live update of both users", "resources: {memoryMax: 1G}\ninitArgs: [quiet]\n",
			[]string{"update machine db", "update machine web"}, "resources.memoryMax: 512M → 1G"},
		{"init arguments: both users restart", "resources: {memoryMax: 512M}\ninitArgs: [debug]\n",
			[]string{"restart machine db", "restart machine web"}, "initArgs: [quiet] → [debug]"},
		{"field moved from the profile into a machine: nothing", "resources: {memoryMax: 512M}\n",
			nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			defs := profileDefs + c.profile
			if c.want == nil {
				// web and db get initArgs from their own documents now.
				defs = strings.ReplaceAll(defs, "profiles: [small]\n", "profiles: [small]\ninitArgs: [quiet]\n")
			}
			after := mustParse(t, defs)
			p := Build(after, converged(before), map[string]store.Record{}, Options{Now: time.Now()})
			var got []string
			for _, a := range p.Actions {
				if a.Kind == "machine" {
					got = append(got, a.Op+" "+a.Kind+" "+a.Name)
					if c.detail != "" && !slices.Contains(a.Changes, c.detail) {
						t.Errorf("%s %s: changes %q, want %q among them", a.Op, a.Name, a.Changes, c.detail)
					}
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Errorf("machine actions %q, want %q\n%s", got, c.want, p)
			}
		})
	}
}
