package plan

import (
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/store"
)

// TestPlanHealth: a machine's health check and readiness are what it was
// started with (a change restarts it, as berth plan says); restart.onUnhealthy
// is the supervisor's too (it kills the machine), so a change restarts it,
// while the rest of the restart policy is berthd's, read at the next exit.
func TestPlanHealth(t *testing.T) {
	app := planBase + "command: [/usr/sbin/nginx, -g, daemon off;]\n"
	withCheck := app + "healthCheck: {command: [/bin/true]}\n"
	for _, tc := range []struct {
		name, running, declared string
		want, detail            string
	}{
		{"health check added", app, withCheck, "restart machine web; update rules berth", `healthCheck: (unset) → {"command":["/bin/true"],"interval":"30s","timeout":"30s","retries":3}`},
		{"health check edited", withCheck, app + "healthCheck: {command: [/bin/true], retries: 5}\n", "restart machine web; update rules berth", `"retries":3} → {"command":["/bin/true"],"interval":"30s","timeout":"30s","retries":5}`},
		{"readiness notify", app, app + "readiness: notify\n", "restart machine web; update rules berth", "readiness"},
		{"onUnhealthy: the supervisor's, a restart", withCheck, withCheck + "restart: {onUnhealthy: true}\n", "restart machine web; update rules berth", "restart.onUnhealthy: false → true"},
		{"restart policy: at the next exit", withCheck, withCheck + "restart: {policy: always}\n", "update machine web", "restart.policy: on-failure → always"},
		{"unchanged", withCheck, withCheck, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := mustParse(t, tc.declared)
			o := converged(d)
			o.Machines["web"].Spec = mustParse(t, tc.running).Machine("web")
			p := Build(d, o, map[string]store.Record{}, Options{Now: time.Now()})
			if got := strings.Join(ops(p), "; "); got != tc.want {
				t.Fatalf("plan:\n%s\ngot  %q\nwant %q", p, got, tc.want)
			}
			if tc.detail != "" && !strings.Contains(p.String()+strings.Join(planLater(p), "\n"), tc.detail) {
				t.Errorf("plan does not mention %q:\n%s", tc.detail, p)
			}
		})
	}
}

// planLater lists what the plan's actions and notes say besides their ops.
func planLater(p *api.Plan) []string {
	var out []string
	for _, a := range p.Actions {
		out = append(out, a.Changes...)
		out = append(out, a.Reason)
	}
	return out
}

// TestAfterExitUnhealthy: an exit for unhealthy is a failure: on-failure
// restarts it with back-off.
func TestAfterExitUnhealthy(t *testing.T) {
	d := mustParse(t, planBase+"command: [/bin/app]\nhealthCheck: {command: [/bin/true]}\nrestart: {policy: on-failure, onUnhealthy: true}\n")
	now := time.Now()
	out := AfterExit("web", d.Machine("web"), store.Record{}, api.ExitInfo{Code: 1, Reason: "unhealthy (exit 1): the health check failed 3 times in a row", Time: now}, now)
	if !out.Restart || out.Event != api.EvMachineRestarting || !strings.Contains(out.Message, "exited: unhealthy") {
		t.Fatalf("%+v", out)
	}
}
