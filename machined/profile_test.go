package machined_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/machined/api"
)

// TestProfileChange: two running machines take their limits and environment
// from a profile, a third does not. After the profile's memory limit changes,
// berth plan lists exactly the two, each as a live update, and apply changes
// their cgroups without restarting them; after its environment changes, the
// plan restarts the two, and the third runs on untouched throughout.
func TestProfileChange(t *testing.T) {
	e := newEnv(t, "")
	a, b, solo := testenv.UniqueName("pa"), testenv.UniqueName("pb"), testenv.UniqueName("ps")
	profile := func(memory, x string) {
		e.write("profile.yaml", "apiVersion: berth/v1\nkind: Profile\nname: small\nresources: {memoryMax: "+memory+", pidsMax: 200}\nenvironment: {X: \""+x+"\"}\n")
	}
	e.write("images.yaml", testImages(t))
	e.write("network.yaml", testNetwork)
	e.write("a.yaml", bbMachine(a, "profiles: [small]\n"))
	e.write("b.yaml", bbMachine(b, "profiles: [small]\n"))
	e.write("solo.yaml", bbMachine(solo, "resources: {memoryMax: 64M}\n"))
	profile("64M", "1")
	e.apply()
	leaders := map[string]int{}
	for _, n := range []string{a, b, solo} {
		leaders[n] = e.waitState(n, api.StateRunning, 30*time.Second).LeaderPID
	}

	plan := func(wantOp, wantChange string) {
		t.Helper()
		p, err := e.api.Plan(context.Background(), api.PlanRequest{Path: e.dir + "/defs"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, act := range p.Actions {
			if act.Kind != "machine" {
				continue
			}
			got = append(got, act.Op+" "+act.Name)
			if !slices.Contains(act.Changes, wantChange) {
				t.Errorf("%s %s: changes %q, want %q", act.Op, act.Name, act.Changes, wantChange)
			}
		}
		slices.Sort(got)
		want := []string{wantOp + " " + a, wantOp + " " + b}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("plan after the profile changed: %q, want %q\n%s", got, want, p)
		}
		t.Logf("berth plan:\n%s", p)
	}

	profile("96M", "1")
	plan(api.OpUpdate, "resources.memoryMax: 64M → 96M")
	e.apply()
	for _, n := range []string{a, b} {
		s := e.status(n)
		if s.LeaderPID != leaders[n] {
			t.Errorf("%s restarted for a limit: leader %d, was %d", n, s.LeaderPID, leaders[n])
		}
		if got := testenv.CgroupLimit(t, s.Cgroup, "memory"); got != strconv.Itoa(96<<20) {
			t.Errorf("%s: memory limit %s, want 96M", n, got)
		}
	}

	profile("96M", "2")
	plan(api.OpRestart, `environment: {"X":"1"} → {"X":"2"}`)
	e.apply()
	for _, n := range []string{a, b} {
		if s := e.waitState(n, api.StateRunning, 30*time.Second); s.LeaderPID == leaders[n] {
			t.Errorf("%s did not restart for its environment", n)
		}
	}
	if s := e.status(solo); s.LeaderPID != leaders[solo] {
		t.Errorf("%s, which does not use the profile, restarted", solo)
	}
}
