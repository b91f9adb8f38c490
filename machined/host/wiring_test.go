package host

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/spec"
)

func TestRuleset(t *testing.T) {
	base, err := os.ReadFile("../plan/testdata/base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d, err := spec.Parse("test.yaml", append(base, `---
apiVersion: berth/v1
kind: Machine
name: router
image: deb
network: {name: lan, antiSpoofing: false}
---
apiVersion: berth/v1
kind: Machine
name: idle
image: deb
network: lan
`...))
	if err != nil {
		t.Fatal(err)
	}
	att := func(name, addr string) *netconf.Attachment {
		return &netconf.Attachment{Machine: name, Bridge: "br-lan", Addr4: netip.MustParsePrefix(addr + "/24")}
	}
	// web and router run; idle does not; old runs but is no longer declared.
	rs := ruleset(d, map[string]*netconf.Attachment{
		"web": att("web", "10.87.0.10"), "router": att("router", "10.87.0.11"), "old": att("old", "10.87.0.12"),
	})
	var guarded []string
	for _, g := range rs.Guards {
		guarded = append(guarded, g.Machine)
	}
	slices.Sort(guarded)
	if strings.Join(guarded, " ") != "old web" {
		t.Errorf("guards for %q, want old (still running) and web (router opted out, idle does not run)", guarded)
	}
	for _, g := range rs.Guards {
		if g.Machine == "web" && (g.HostIf != "vb-web" || g.MAC.String() != netconf.MAC("web").String() || g.Addr4 != netip.MustParseAddr("10.87.0.10")) {
			t.Errorf("web's guard %+v: want its port, default MAC and address", g)
		}
	}
	if len(rs.Forwards) != 1 || rs.Forwards[0].Machine != "web" {
		t.Errorf("forwards %+v, want web's only", rs.Forwards)
	}
	if err := rs.Validate(); err != nil {
		t.Error(err)
	}
}

// TestContainerConfigApp: an application machine's command, working
// directory and environment reach the container.
func TestContainerConfigApp(t *testing.T) {
	m := &spec.Machine{Name: "app", Command: []string{"/bin/app", "-v"}, WorkDir: "/srv", Environment: map[string]string{"B": "2", "A": "1"}}
	c := containerConfig(config.Paths{StateDir: "/s", RuntimeDir: "/r", LogDir: "/l"}, m, nil)
	if c.Boot || !slices.Equal(c.Args, m.Command) || c.WorkingDir != "/srv" || !slices.Equal(c.Env, []string{"A=1", "B=2"}) {
		t.Errorf("boot %v args %q dir %q env %q", c.Boot, c.Args, c.WorkingDir, c.Env)
	}
}

// TestContainerConfigHealth: readiness notify and the health check reach
// the supervisor, restart.onUnhealthy as its kill.
func TestContainerConfigHealth(t *testing.T) {
	m := &spec.Machine{Name: "app", Command: []string{"/bin/app"}, Readiness: spec.Readiness{Type: spec.ReadinessNotify},
		HealthCheck: &spec.HealthCheck{Command: []string{"/bin/check"}}, Restart: spec.Restart{OnUnhealthy: true}}
	m.Default()
	c := containerConfig(config.Paths{StateDir: "/s", RuntimeDir: "/r", LogDir: "/l"}, m, nil)
	if c.Readiness != container.ReadinessNotify || c.ReadyTimeout != 90*time.Second {
		t.Errorf("readiness %q, timeout %s", c.Readiness, c.ReadyTimeout)
	}
	if h := c.HealthCheck; h == nil || !slices.Equal(h.Command, []string{"/bin/check"}) || h.Interval != 30*time.Second ||
		h.Timeout != 30*time.Second || h.Retries != 3 || !h.KillUnhealthy {
		t.Errorf("health check %+v", h)
	}
	if c := containerConfig(config.Paths{}, &spec.Machine{Name: "plain"}, nil); c.Readiness != "" || c.HealthCheck != nil {
		t.Errorf("a machine without them: %q %+v", c.Readiness, c.HealthCheck)
	}
}
