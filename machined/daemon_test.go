package machined_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/userns"
	"github.com/berthd/berth/machined"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/config"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/supervisor"
)

// The test binary is also berthd (stage test-berthd), each machine's supervisor
// (machined's own supervise stage) and the payload's init stage.
func init() {
	container.RegisterStage("test-berthd", func() {
		cfg, err := config.Load(os.Getenv("BERTH_TEST_CONFIG"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		ctx, stop := signalContext()
		defer stop()
		if err := machined.Main(ctx, cfg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	})
}

func TestMain(m *testing.M) {
	container.Reexec()
	os.Exit(m.Run())
}

// env is one test's berth installation: its own state, runtime and log
// directories, a network namespace standing in for the host, and a berthd
// running in it.
type env struct {
	t      *testing.T
	dir    string
	netns  string // name under /run/netns
	cfg    string
	paths  config.Paths
	daemon *exec.Cmd
	api    *api.Client
	// resolverStart is the start time of the resolver resolverPID found.
	resolverStart uint64
}

func newEnv(t *testing.T, extraConfig string) *env {
	t.Helper()
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	testenv.RequireCommand(t, "ip", "nsenter")
	dir := t.TempDir()
	e := &env{t: t, dir: dir, netns: testenv.UniqueName("berthd-test")}
	e.paths = config.Paths{StateDir: filepath.Join(dir, "state"), RuntimeDir: filepath.Join(dir, "run"), LogDir: filepath.Join(dir, "log")}
	e.paths.Socket = filepath.Join(e.paths.RuntimeDir, "berthd.sock")
	if out, err := exec.Command("ip", "netns", "add", e.netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", e.netns).Run() })
	e.nsRun("ip", "link", "set", "lo", "up")
	e.cfg = filepath.Join(dir, "berthd.yaml")
	resync := "resync: 2s\n"
	if strings.Contains(extraConfig, "resync:") {
		resync = ""
	}
	conf := fmt.Sprintf("stateDir: %s\nruntimeDir: %s\nlogDir: %s\n%sparallelism: 4\n%s", e.paths.StateDir, e.paths.RuntimeDir, e.paths.LogDir, resync, extraConfig)
	if err := os.WriteFile(e.cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// Machines are stopped before the directories go (cleanups run last first).
	t.Cleanup(e.teardown)
	e.startDaemon()
	return e
}

func (e *env) nsRun(args ...string) string {
	e.t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + e.netns, "--"}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (e *env) startDaemon() {
	e.t.Helper()
	logf, err := os.OpenFile(filepath.Join(e.dir, "berthd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	defer logf.Close()
	self, _ := os.Executable()
	cmd := exec.Command("nsenter", "--net=/run/netns/"+e.netns, "--", self)
	cmd.Env = append(os.Environ(), "_BERTH_STAGE=test-berthd", "BERTH_TEST_CONFIG="+e.cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.daemon = cmd
	testenv.Eventually(e.t, 20*time.Second, func() error {
		c, err := api.Dial(context.Background(), e.paths.Socket)
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(e.dir, "berthd.log"))
			return fmt.Errorf("berthd did not come up: %v\n%s", err, log)
		}
		e.api = c
		return nil
	})
}

// killDaemon ends berthd with SIGKILL, as a crash would.
func (e *env) killDaemon() {
	e.t.Helper()
	if e.daemon == nil {
		return
	}
	_ = e.daemon.Process.Kill()
	_, _ = e.daemon.Process.Wait()
	e.daemon = nil
}

func (e *env) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if e.api != nil && e.daemon != nil {
		if list, err := e.api.List(ctx); err == nil {
			for _, m := range list {
				if m.State != api.StateStopped && m.State != api.StateFailed {
					_ = e.api.Verb(ctx, m.Name, "terminate")
				}
			}
		}
	}
	if e.daemon != nil {
		_ = e.daemon.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _, _ = e.daemon.Process.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = e.daemon.Process.Kill()
		}
	}
	// Whatever still runs (a test failed half-way) is killed through its supervisor.
	ents, _ := os.ReadDir(filepath.Join(e.paths.RuntimeDir, "machines"))
	for _, d := range ents {
		dir := filepath.Join(e.paths.RuntimeDir, "machines", d.Name())
		if c, err := container.Dial(dir); err == nil {
			_ = c.Terminate(ctx)
			_, _ = c.Wait(ctx)
		}
	}
	// The networks' resolvers outlive berthd, as they must: stop them.
	if err := supervisor.StopResolvers(ctx, e.paths.RuntimeDir); err != nil {
		e.t.Errorf("stop the resolvers: %v", err)
	}
	if e.t.Failed() {
		log, _ := os.ReadFile(filepath.Join(e.dir, "berthd.log"))
		e.t.Logf("berthd log:\n%s", testenv.Tail(log, 6000))
	}
}

// run runs a subtest whose failures the env's helpers report.
func (e *env) run(name string, fn func(t *testing.T)) {
	parent := e.t
	if parent.Failed() {
		return // each step builds on the ones before
	}
	parent.Run(name, func(t *testing.T) {
		e.t = t
		defer func() { e.t = parent }()
		fn(t)
	})
}

// write puts a definition file under the env's definitions directory.
func (e *env) write(rel, content string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, "defs", rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) apply() *api.ApplyResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := e.api.Apply(ctx, api.ApplyRequest{Path: filepath.Join(e.dir, "defs")})
	if err != nil {
		if res != nil && res.Plan != nil {
			e.t.Fatalf("apply: %v\n%s", err, strings.Join(res.Plan.Errors, "\n"))
		}
		e.t.Fatalf("apply: %v", err)
	}
	for _, r := range res.Results {
		if r.Error != "" {
			e.t.Fatalf("apply: %s: %s", r.Action, r.Error)
		}
	}
	return res
}

func (e *env) status(name string) *api.MachineStatus {
	e.t.Helper()
	s, err := e.api.Status(context.Background(), name)
	if err != nil {
		e.t.Fatalf("status %s: %v", name, err)
	}
	return s
}

// waitState waits until the machine is in state (and, when given, cond holds).
func (e *env) waitState(name, state string, limit time.Duration) *api.MachineStatus {
	e.t.Helper()
	var s *api.MachineStatus
	testenv.Eventually(e.t, limit, func() error {
		var err error
		if s, err = e.api.Status(context.Background(), name); err != nil {
			return fmt.Errorf("machine %s: %v", name, err)
		}
		if s.State != state {
			return fmt.Errorf("machine %s is %s, want %s (notes %q, last error %q)", name, s.State, state, s.Notes, s.LastError)
		}
		return nil
	})
	return s
}

// lastEvent is the sequence number of the last event in berthd's log.
func (e *env) lastEvent() uint64 {
	e.t.Helper()
	var seq uint64
	if err := e.api.Events(context.Background(), 0, "", false, func(ev api.Event) error { seq = max(seq, ev.Seq); return nil }); err != nil {
		e.t.Fatal(err)
	}
	return seq
}

// events are the events about machine after seq.
func (e *env) events(machine string, seq uint64) []api.Event {
	e.t.Helper()
	var out []api.Event
	if err := e.api.Events(context.Background(), seq, machine, false, func(ev api.Event) error { out = append(out, ev); return nil }); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// exec runs a command in a running machine (as berth shell does) and returns
// its output and exit code.
func (e *env) exec(name string, args ...string) (string, int) {
	e.t.Helper()
	s := e.status(name)
	if s.LeaderPID == 0 {
		e.t.Fatalf("machine %s is not running", name)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := container.Enter(ctx, filepath.Join(e.paths.RuntimeDir, "machines", name), container.EnterOptions{Command: args, Stdout: &out, Stderr: &out})
	if err != nil {
		e.t.Fatalf("enter %s: %v", name, err)
	}
	return out.String(), code
}

const testNetwork = `apiVersion: berth/v1
kind: Network
name: lan
subnet: 10.98.0.0/24
`

func testImages(t *testing.T) string {
	return fmt.Sprintf(`apiVersion: berth/v1
kind: Image
name: bb
directory: %s
`, testenv.BusyboxGuest(t))
}

func bbMachine(name, extra string) string {
	if !strings.Contains(extra, "network:") {
		extra = "network: lan\n" + extra
	}
	return fmt.Sprintf(`apiVersion: berth/v1
kind: Machine
name: %s
image: bb
restart: {policy: on-failure, backoff: 200ms, maxBackoff: 1s, maxRetries: 3}
%s`, name, extra)
}

// TestDaemon walks through the daemon's life: apply, no-op plan, live limits,
// a removed definition, a crashed berthd, a crashing machine, a malformed
// file, drift, and holds.
func TestDaemon(t *testing.T) {
	e := newEnv(t, "")
	// Machine names are global on a host (cgroups, systemd-machined): unique
	// ones keep this test out of the way of others running beside it.
	a, b, c := testenv.UniqueName("a"), testenv.UniqueName("b"), testenv.UniqueName("c")
	e.write("images.yaml", testImages(t))
	e.write("network.yaml", testNetwork)
	e.write("a.yaml", bbMachine(a, "resources: {memoryMax: 64M, pidsMax: 200}\n"))
	e.write("b.yaml", bbMachine(b, "network: {name: lan, ports: [\"8080:80\"]}\n"))
	e.write("c.yaml", bbMachine(c, ""))
	ctx := context.Background()

	e.run("apply boots them all", func(t *testing.T) {
		e.apply()
		for _, n := range []string{a, b, c} {
			e.waitState(n, api.StateRunning, 20*time.Second)
		}
		out, code := e.exec(a, "ping", "-c1", "-W2", e.status(c).Addresses[0])
		if code != 0 {
			t.Fatalf("a cannot ping c: %s", out)
		}
	})

	ranges := map[string]uint32{}
	e.run("each machine has a user namespace and a range of its own", func(t *testing.T) {
		seen := map[uint32]string{}
		for _, n := range []string{a, b, c} {
			u := e.status(n).Users
			if u == nil || u.Size != userns.Size || u.Root != "idmapped" {
				t.Fatalf("%s: users %+v, want an idmapped root in a range of 65536", n, u)
			}
			if o, ok := seen[u.Base]; ok {
				t.Fatalf("%s and %s share the range at %d", n, o, u.Base)
			}
			seen[u.Base], ranges[n] = n, u.Base
			out, _ := e.exec(n, "cat", "/proc/self/uid_map")
			if f := strings.Fields(out); len(f) != 3 || f[0] != "0" || f[1] != strconv.Itoa(int(u.Base)) || f[2] != "65536" {
				t.Fatalf("%s: uid_map %q, want 0 %d 65536", n, out, u.Base)
			}
		}
		for _, n := range []string{a, b, c} {
			for _, m := range []string{a, b, c} {
				if d := int64(ranges[n]) - int64(ranges[m]); n != m && d > -userns.Size && d < userns.Size {
					t.Fatalf("ranges of %s (%d) and %s (%d) overlap", n, ranges[n], m, ranges[m])
				}
			}
		}
	})

	e.run("plan then reports no changes", func(t *testing.T) {
		p, err := e.api.Plan(ctx, api.PlanRequest{Path: filepath.Join(e.dir, "defs")})
		if err != nil {
			t.Fatal(err)
		}
		if p.Changes() {
			t.Fatalf("plan after apply has changes:\n%s", p)
		}
	})

	e.run("a memory limit applies live", func(t *testing.T) {
		before := e.status(a)
		e.write("a.yaml", bbMachine(a, "resources: {memoryMax: 96M, pidsMax: 200}\n"))
		p, err := e.api.Plan(ctx, api.PlanRequest{Path: filepath.Join(e.dir, "defs")})
		if err != nil || len(p.Actions) != 1 || p.Actions[0].Op != api.OpUpdate {
			t.Fatalf("plan = %v, %v; want one live update", p, err)
		}
		e.apply()
		if got := testenv.CgroupLimit(t, e.status(a).Cgroup, "memory"); got != strconv.Itoa(96<<20) {
			t.Fatalf("memory limit in the cgroup = %s, want %d", got, 96<<20)
		}
		after := e.status(a)
		if !after.Since.Equal(before.Since) || after.LeaderPID != before.LeaderPID {
			t.Fatalf("machine restarted: since %s → %s, leader %d → %d", before.Since, after.Since, before.LeaderPID, after.LeaderPID)
		}
	})

	e.run("I/O limits and a CPU set apply live", func(t *testing.T) {
		if !testenv.HasController(t, "blkio") || !testenv.HasController(t, "cpuset") {
			t.Skip("skipping: no v1 blkio and cpuset controllers here")
		}
		node, disk := testenv.DiskOf(t, e.dir)
		before := e.status(a)
		e.write("a.yaml", bbMachine(a, "resources: {memoryMax: 96M, pidsMax: 200, cpuset: '0', io: [{device: "+node+", writeBandwidth: 2M}]}\n"))
		p, err := e.api.Plan(ctx, api.PlanRequest{Path: filepath.Join(e.dir, "defs")})
		if err != nil || len(p.Actions) != 1 || p.Actions[0].Op != api.OpUpdate || !strings.Contains(p.String(), "resources.cpuset: (unset) → 0") {
			t.Fatalf("plan = %v, %v; want one live update of resources.cpuset and io", p, err)
		}
		e.apply()
		cg := e.status(a).Cgroup
		for file, want := range map[string]string{
			"blkio/" + cg + "/payload/blkio.throttle.write_bps_device": disk + " 2097152",
			"cpuset/" + cg + "/payload/cpuset.cpus":                    "0",
		} {
			if b, _ := os.ReadFile("/sys/fs/cgroup/" + file); strings.TrimSpace(string(b)) != want {
				t.Errorf("%s = %q, want %q", file, b, want)
			}
		}
		after := e.status(a)
		if !after.Since.Equal(before.Since) || after.LeaderPID != before.LeaderPID {
			t.Fatalf("machine restarted: since %s → %s, leader %d → %d", before.Since, after.Since, before.LeaderPID, after.LeaderPID)
		}
	})

	e.run("anti-spoofing guards every machine and turns off live", func(t *testing.T) {
		hasChain := func(name string) bool {
			return strings.Contains(e.nsRun("nft", "list", "table", "bridge", "berth"), "chain machine-"+name+" {")
		}
		for _, n := range []string{a, b, c} {
			if !hasChain(n) {
				t.Fatalf("no anti-spoofing chain for %s:\n%s", n, e.nsRun("nft", "list", "table", "bridge", "berth"))
			}
		}
		before := e.status(b)
		e.write("b.yaml", bbMachine(b, "network: {name: lan, ports: [\"8080:80\"], antiSpoofing: false}\n"))
		p, err := e.api.Plan(ctx, api.PlanRequest{Path: filepath.Join(e.dir, "defs")})
		if err != nil || !strings.Contains(p.String(), "network.antiSpoofing: true → false") || !strings.Contains(p.String(), "machine "+b+" has an anti-spoofing guard it should not have") {
			t.Fatalf("plan = %v, %v; want a live update of network.antiSpoofing and of the rules", p, err)
		}
		for _, a := range p.Actions {
			if a.Op != api.OpUpdate {
				t.Fatalf("plan has %s %s %s: want live updates only:\n%s", a.Op, a.Kind, a.Name, p)
			}
		}
		t.Logf("plan:\n%s", p)
		e.apply()
		if hasChain(b) {
			t.Fatalf("%s is still guarded with antiSpoofing: false", b)
		}
		if after := e.status(b); after.LeaderPID != before.LeaderPID {
			t.Fatalf("turning anti-spoofing off restarted the machine: leader %d → %d", before.LeaderPID, after.LeaderPID)
		}
		if p, err := e.api.Plan(ctx, api.PlanRequest{Path: filepath.Join(e.dir, "defs")}); err != nil || p.Changes() {
			t.Fatalf("plan after the update has changes: %v, %v", p, err)
		}
		e.write("b.yaml", bbMachine(b, "network: {name: lan, ports: [\"8080:80\"]}\n"))
		e.apply()
		if !hasChain(b) {
			t.Fatalf("%s is not guarded again", b)
		}
		if out, code := e.exec(b, "ping", "-c1", "-W2", e.status(a).Addresses[0]); code != 0 {
			t.Fatalf("b cannot ping a through its guard: %s", out)
		}
	})

	e.run("machines outlive a crashed berthd and are re-adopted", func(t *testing.T) {
		since := map[string]time.Time{}
		for _, n := range []string{a, b, c} {
			since[n] = e.status(n).Since
		}
		// berthd is gone and reaped: what its death does to its children
		// (reparenting, a parent-death signal) is done by then. Each
		// supervisor still runs its machine and answers on its control socket.
		e.killDaemon()
		for _, n := range []string{a, b, c} {
			dir := filepath.Join(e.paths.RuntimeDir, "machines", n)
			st, err := container.ReadState(dir)
			if err != nil || !st.SupervisorAlive() {
				t.Fatalf("machine %s died with berthd: %v", n, err)
			}
			var now container.State
			cl, err := container.Dial(dir)
			if err == nil {
				now, err = cl.Status(ctx)
			}
			if err != nil || now.Phase != container.PhaseRunning || now.SupervisorPID != st.SupervisorPID {
				t.Fatalf("machine %s after berthd died: %+v, %v", n, now, err)
			}
		}
		e.startDaemon()
		for _, n := range []string{a, b, c} {
			s := e.status(n)
			if s.State != api.StateRunning || !s.Since.Equal(since[n]) {
				t.Fatalf("%s after restart: %s since %s, want running since %s", n, s.State, s.Since, since[n])
			}
			if s.Users == nil || s.Users.Base != ranges[n] {
				t.Fatalf("%s after restart: users %+v, want the range at %d", n, s.Users, ranges[n])
			}
		}
	})

	e.run("deleting a definition stops that machine only", func(t *testing.T) {
		bSince := e.status(b).Since
		if err := os.Remove(filepath.Join(e.dir, "defs", "c.yaml")); err != nil {
			t.Fatal(err)
		}
		e.apply()
		s := e.waitState(c, api.StateStopped, 20*time.Second)
		if s.Declared || s.RootStrategy == "" {
			t.Fatalf("c: declared %v, root %q: want undeclared with its root kept", s.Declared, s.RootStrategy)
		}
		if b := e.status(b); b.State != api.StateRunning || !b.Since.Equal(bSince) {
			t.Fatalf("b was disturbed: %s since %s (was %s)", b.State, b.Since, bSince)
		}
		// berth remove --delete-data: its root and its address lease go.
		if err := e.api.Verb(ctx, c, "remove"); err != nil {
			t.Fatal(err)
		}
		leases, _ := os.ReadFile(filepath.Join(e.paths.StateDir, "network", "leases.json"))
		if strings.Contains(string(leases), c) {
			t.Fatalf("lease of the removed machine kept:\n%s", leases)
		}
		if _, err := e.api.Status(ctx, c); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("status of the removed machine: %v", err)
		}
		if r, ok, err := userns.Open(e.paths.StateDir).Get(c); err != nil || ok {
			t.Fatalf("range of the removed machine kept: %v %v", r, err)
		}
	})

	e.run("a hostname change reboots that machine only, which keeps running", func(t *testing.T) {
		before := e.status(b)
		old, err := container.ReadState(filepath.Join(e.paths.RuntimeDir, "machines", b))
		if err != nil {
			t.Fatal(err)
		}
		seq := e.lastEvent()
		e.write("b.yaml", bbMachine(b, "hostname: renamed\nnetwork: {name: lan, ports: [\"8080:80\"]}\n"))
		res := e.apply()
		if len(res.Results) == 0 || res.Results[0].Action.Op != api.OpRestart {
			t.Fatalf("apply after a hostname change: %+v", res.Results)
		}
		s := e.waitState(b, api.StateRunning, 20*time.Second)
		if s.LeaderPID == before.LeaderPID || s.Hold != nil {
			t.Fatalf("after the restart: leader %d (was %d), hold %+v", s.LeaderPID, before.LeaderPID, s.Hold)
		}
		if out, _ := e.exec(b, "hostname"); strings.TrimSpace(out) != "renamed" {
			t.Fatalf("hostname after the restart: %q", out)
		}
		if s.Users == nil || s.Users.Base != ranges[b] {
			t.Fatalf("after the restart: users %+v, want the range at %d", s.Users, ranges[b])
		}
		// A wrongly counted exit shows once the old run is over and a
		// reconcile pass has followed: as a restart or hold, and in the log.
		testenv.Eventually(t, 20*time.Second, func() error {
			if old.SupervisorAlive() {
				return fmt.Errorf("the supervisor of the old run (PID %d) is still alive", old.SupervisorPID)
			}
			return nil
		})
		if _, err := e.api.Apply(ctx, api.ApplyRequest{}); err != nil {
			t.Fatal(err)
		}
		if s := e.status(b); s.State != api.StateRunning || s.Restarts != 0 || s.Hold != nil {
			t.Fatalf("the restart was taken for a crash: %+v", s)
		}
		for _, ev := range e.events(b, seq) {
			switch ev.Kind {
			case api.EvMachineRestarting, api.EvMachineExited, api.EvMachineFailed, api.EvMachineHeld:
				t.Fatalf("the restart was taken for a crash: %s %s", ev.Kind, ev.Message)
			}
		}
	})

	e.run("a crashed init is restarted, then marked failed", func(t *testing.T) {
		first := e.status(a).LeaderPID
		if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 20*time.Second, func() error {
			if s := e.status(a); s.State != api.StateRunning || s.LeaderPID == first {
				return fmt.Errorf("a not restarted: %+v", s)
			}
			return nil
		})
		// Keep killing it: after maxRetries (3) restarts it is given up.
		testenv.Eventually(t, 40*time.Second, func() error {
			s := e.status(a)
			if s.State == api.StateFailed {
				return nil
			}
			if s.LeaderPID != 0 {
				_ = syscall.Kill(s.LeaderPID, syscall.SIGKILL)
			}
			return fmt.Errorf("a never marked failed: %+v", s)
		})
		if s := e.status(a); s.Hold == nil || !strings.Contains(s.Hold.Message, "gave up") {
			t.Fatalf("failed without a reason: %+v", s.Hold)
		}
		// berth start lifts the failure.
		if err := e.api.Verb(ctx, a, "start"); err != nil {
			t.Fatal(err)
		}
		e.waitState(a, api.StateRunning, 20*time.Second)
	})

	e.run("a malformed file is reported and touches nothing", func(t *testing.T) {
		since := e.status(b).Since
		bad := e.write("broken.yaml", "apiVersion: berth/v1\nkind: Machine\nname: "+testenv.UniqueName("d")+"\nimage: bb\nmemry: 1\n")
		_, err := e.api.Apply(ctx, api.ApplyRequest{Path: filepath.Join(e.dir, "defs")})
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("apply with a broken file: %v, want invalid", err)
		}
		p, err := e.api.Plan(ctx, api.PlanRequest{Path: filepath.Join(e.dir, "defs")})
		if err != nil || len(p.Errors) == 0 || !strings.Contains(p.Errors[0], "broken.yaml:5:1") {
			t.Fatalf("plan errors = %q, %v; want broken.yaml:5:1", p.Errors, err)
		}
		if s := e.status(b); s.State != api.StateRunning || !s.Since.Equal(since) {
			t.Fatalf("b disturbed by a broken file: %+v", s)
		}
		os.Remove(bad)
	})

	e.run("drift is repaired", func(t *testing.T) {
		hostIf := netconf.HostIfName(b)
		e.nsRun("ip", "link", "del", hostIf)
		e.nsRun("nft", "delete", "table", "inet", "berth")
		e.nsRun("nft", "delete", "table", "bridge", "berth")
		testenv.Eventually(t, 15*time.Second, func() error {
			_, errLink := exec.Command("nsenter", "--net=/run/netns/"+e.netns, "--", "ip", "link", "show", hostIf).CombinedOutput()
			_, errTable := exec.Command("nsenter", "--net=/run/netns/"+e.netns, "--", "nft", "list", "table", "inet", "berth").CombinedOutput()
			_, errGuards := exec.Command("nsenter", "--net=/run/netns/"+e.netns, "--", "nft", "list", "chain", "bridge", "berth", "machine-"+b).CombinedOutput()
			if errLink != nil || errTable != nil || errGuards != nil {
				return fmt.Errorf("drift not repaired: link %v, table inet %v, table bridge %v", errLink, errTable, errGuards)
			}
			return nil
		})
		if out, code := e.exec(b, "ping", "-c1", "-W2", "10.98.0.1"); code != 0 {
			t.Fatalf("b cannot reach the gateway after repair: %s", out)
		}
	})

	e.run("berth stop holds a machine until berth start", func(t *testing.T) {
		if err := e.api.Verb(ctx, b, "stop"); err != nil {
			t.Fatal(err)
		}
		s := e.waitState(b, api.StateStopped, 20*time.Second)
		if s.Hold == nil || s.Hold.Reason != api.HoldStopped {
			t.Fatalf("stopped without a hold: %+v", s)
		}
		if _, err := e.api.Apply(ctx, api.ApplyRequest{}); err != nil {
			t.Fatal(err)
		}
		if s := e.status(b); s.State != api.StateStopped {
			t.Fatalf("a reconcile undid berth stop: %s", s.State)
		}
		if err := e.api.Verb(ctx, b, "start"); err != nil {
			t.Fatal(err)
		}
		e.waitState(b, api.StateRunning, 20*time.Second)
	})

	e.run("berth stop and start of many names act on them together", func(t *testing.T) {
		e.waitState(a, api.StateRunning, 20*time.Second)
		e.waitState(b, api.StateRunning, 20*time.Second)
		ghost := testenv.UniqueName("ghost")
		outs, err := e.api.Verbs(ctx, api.VerbRequest{Verb: "stop", Names: []string{a, ghost, b}})
		if err != nil {
			t.Fatal(err)
		}
		if len(outs) != 3 || outs[0].Error != "" || outs[2].Error != "" || !strings.Contains(outs[1].Error, ghost) {
			t.Fatalf("stop a, %s, b: %+v", ghost, outs)
		}
		// The request returns once both have ended: no waiting here.
		for _, n := range []string{a, b} {
			if s := e.status(n); s.State != api.StateStopped || s.Hold == nil {
				t.Fatalf("%s after berth stop returned: %s, hold %+v", n, s.State, s.Hold)
			}
		}
		outs, err = e.api.Verbs(ctx, api.VerbRequest{Verb: "start", Names: []string{a, b}})
		if err != nil || outs[0].Error != "" || outs[1].Error != "" {
			t.Fatalf("start a b: %+v, %v", outs, err)
		}
		e.waitState(a, api.StateRunning, 20*time.Second)
		e.waitState(b, api.StateRunning, 20*time.Second)
	})
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// TestGitSource: a commit that adds a machine to a Git repository berthd
// follows is picked up at the next poll.
func TestGitSource(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.RequireCommand(t, "git")
	repo := filepath.Join(t.TempDir(), "defs.git")
	work := filepath.Join(t.TempDir(), "work")
	git := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	git("/", "init", "-q", "--bare", "-b", "main", repo)
	git("/", "init", "-q", "-b", "main", work)
	if err := os.MkdirAll(filepath.Join(work, "berth"), 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(rel, content string) {
		if err := os.WriteFile(filepath.Join(work, "berth", rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("images.yaml", testImages(t))
	put("network.yaml", testNetwork)
	git(work, "add", ".")
	git(work, "commit", "-q", "-m", "network and image")
	git(work, "push", "-q", repo, "main")

	e := newEnv(t, fmt.Sprintf("sources:\n  - git: {url: %s, branch: main, path: berth, interval: 1s}\n", repo))
	name := testenv.UniqueName("git")
	put("m.yaml", bbMachine(name, ""))
	git(work, "add", ".")
	git(work, "commit", "-q", "-m", "add a machine")
	git(work, "push", "-q", repo, "main")

	testenv.Eventually(t, 30*time.Second, func() error {
		if s, err := e.api.Status(context.Background(), name); err != nil || s.State != api.StateRunning {
			d, _ := e.api.Daemon(context.Background())
			return fmt.Errorf("the machine added by a commit is not running; daemon: %+v", d)
		}
		return nil
	})
	if s := e.status(name); !strings.Contains(s.Source, "defs:berth/m.yaml") {
		t.Errorf("source = %q, want the file in the repository", s.Source)
	}
}

// TestWatchedSource: a directory named in berthd.yaml is followed through
// inotify; a malformed file there is reported with its place in the daemon's
// status and event log and changes nothing; a machine that ended while berthd
// was down gets its restart policy applied when berthd comes back.
func TestWatchedSource(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	dir := filepath.Join(t.TempDir(), "watched")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A long resync: only inotify can make the machine start in time.
	e := newEnv(t, fmt.Sprintf("resync: 1h\nsources:\n  - path: %s\n", dir))
	ctx := context.Background()
	name := testenv.UniqueName("w")
	put := func(rel, content string) {
		if err := os.WriteFile(filepath.Join(dir, rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("base.yaml", testImages(t)+"---\n"+testNetwork)
	put("m.yaml", strings.Replace(bbMachine(name, ""), "policy: on-failure", "policy: \"no\"", 1))
	s := e.waitState(name, api.StateRunning, 20*time.Second)

	// SIGHUP (systemctl reload berthd) is a reload, not the end of berthd.
	if err := e.daemon.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		reloaded := false
		_ = e.api.Events(ctx, 0, "", false, func(ev api.Event) error {
			reloaded = reloaded || ev.Message == "reload (SIGHUP)"
			return nil
		})
		if !reloaded {
			return errors.New("berthd did not reload on SIGHUP")
		}
		return nil
	})

	put("broken.yaml", "apiVersion: berth/v1\nkind: Machine\nname: x\nimage: bb\nmemry: 1\n")
	testenv.Eventually(t, 10*time.Second, func() error {
		if d, err := e.api.Daemon(ctx); err != nil || len(d.Errors) == 0 {
			return fmt.Errorf("a malformed file is not reported in berthd's status: %+v, %v", d, err)
		}
		return nil
	})
	if d, _ := e.api.Daemon(ctx); !strings.Contains(d.Errors[0], "broken.yaml:5:1") {
		t.Fatalf("daemon errors: %q", d.Errors)
	}
	var reported bool
	_ = e.api.Events(ctx, 0, "", false, func(ev api.Event) error {
		if ev.Kind == api.EvDefinitionError && strings.Contains(ev.Message, "broken.yaml:5:1") {
			reported = true
		}
		return nil
	})
	if !reported {
		t.Error("the malformed file is not in the event log")
	}
	if now := e.status(name); now.State != api.StateRunning || now.LeaderPID != s.LeaderPID {
		t.Fatalf("a malformed file disturbed the machine: %+v", now)
	}
	os.Remove(filepath.Join(dir, "broken.yaml"))

	// The machine ends while berthd is down; its policy (no) keeps it down.
	e.killDaemon()
	if err := syscall.Kill(s.LeaderPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if st, err := container.ReadState(filepath.Join(e.paths.RuntimeDir, "machines", name)); err != nil || st.SupervisorAlive() {
			return fmt.Errorf("the supervisor of %s has not ended: %v", name, err)
		}
		return nil
	})
	e.startDaemon()
	// The new berthd's first pass, which handles the exit nobody watched, is
	// over once it reports one.
	testenv.Eventually(t, 20*time.Second, func() error {
		if d, err := e.api.Daemon(ctx); err != nil || d.LastReconcile.IsZero() {
			return fmt.Errorf("berthd has not finished its first pass: %+v, %v", d, err)
		}
		return nil
	})
	after := e.status(name)
	if after.State == api.StateRunning || after.Hold == nil || after.Hold.Reason != api.HoldExited || after.LastExit == nil {
		t.Fatalf("a machine with restart: no that ended while berthd was down: %+v (hold %+v)", after, after.Hold)
	}
}
