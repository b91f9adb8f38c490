package units

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testhost"
	"github.com/godbus/dbus/v5"
)

// The TestSystemd* tests need systemd as PID 1, the system bus and
// systemd-machined. On a systemd host they run directly (as root); on a host
// without systemd (CI), TestInTestHost boots a test host and runs them there, in
// this very test binary copied inside.

func TestInTestHost(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	if testhost.Inside() {
		t.Skip("already inside the test host")
	}
	if Booted() {
		t.Skip("systemd runs this host: the TestSystemd tests run directly")
	}
	for _, hybrid := range []bool{false, true} {
		t.Run(map[bool]string{false: "unified", true: "hybrid"}[hybrid], func(t *testing.T) {
			runInTestHost(t, hybrid)
		})
	}
}

// runInTestHost boots a test host with the given cgroup layout and runs the
// TestSystemd tests inside it.
func runInTestHost(t *testing.T, hybrid bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h := testhost.New(t, testhost.Options{Hybrid: hybrid})
	if err := h.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("test host boot time: %v", h.BootTime)
	out, err := h.RunTestBinary(ctx, "^TestSystemd")
	t.Logf("inside the test host:\n%s", out)
	if err != nil {
		t.Fatalf("the systemd tests failed inside the test host: %v", err)
	}
}

// needSystemd skips unless systemd, the bus and machined are here (root).
func needSystemd(t *testing.T) (context.Context, *Systemd) {
	t.Helper()
	testenv.SkipUnlessRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	if !Available(ctx) {
		if testhost.Inside() {
			t.Fatal("inside the test host, but systemd is not available")
		}
		t.Skip("skipping: systemd is not PID 1 here (TestInTestHost runs this inside a test host)")
	}
	s, err := Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return ctx, s
}

// sleeper starts a process that stands in for a machine's supervisor or init.
func sleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// killScope ends a test's scope: SIGKILL to all its processes, then it goes
// away by itself. (systemctl stop would ask the test's connection, its
// controller, and wait the stop timeout when nobody handles the request.)
func killScope(t *testing.T, s *Systemd, unit string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.KillScope(ctx, unit, "all", syscall.SIGKILL); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	for {
		if st, err := s.ScopeState(ctx, unit); err != nil || st == "inactive" {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("cleanup: scope %s did not go away", unit)
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func show(t *testing.T, unit string, props ...string) map[string]string {
	t.Helper()
	args := []string{"show", unit}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	out, err := exec.Command("systemctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("systemctl show %s: %v: %s", unit, err, out)
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}

func expectProps(t *testing.T, unit string, want map[string]string) {
	t.Helper()
	var names []string
	for k := range want {
		names = append(names, k)
	}
	got := show(t, unit, names...)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s=%s, want %s", unit, k, got[k], v)
		}
	}
}

func TestSystemdScope(t *testing.T) {
	ctx, s := needSystemd(t)
	name := testenv.UniqueName("scope")
	sup := sleeper(t)
	stopAsked := make(chan string, 1)
	s.OnStopRequest(func(unit string) {
		stopAsked <- unit
		// What the supervisor does after a clean poweroff: exit, emptying the scope.
		sup.Process.Kill()
	})
	unit, cg, err := s.StartScope(ctx, Scope{Machine: name, PIDs: []int{sup.Process.Pid}, StopTimeout: 5 * time.Second,
		Resources: Resources{MemoryMax: 256 << 20, MemoryHigh: 200 << 20, CPUs: 1.5, CPUWeight: 200, PidsMax: 100, IOWeight: 300}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killScope(t, s, unit) })
	if unit != ScopeName(name) || cg != "/machine.slice/"+unit {
		t.Errorf("unit %q cgroup %q", unit, cg)
	}
	own, _ := os.ReadFile("/proc/" + strconv.Itoa(sup.Process.Pid) + "/cgroup")
	if !strings.Contains(string(own), cg) {
		t.Errorf("the supervisor is not in %s:\n%s", cg, own)
	}
	expectProps(t, unit, map[string]string{
		"ActiveState": "active", "Slice": "machine.slice", "Delegate": "yes",
		"MemoryMax": "268435456", "MemoryHigh": "209715200", "TasksMax": "100",
		"CPUQuotaPerSecUSec": "1.500000s", "CPUWeight": "200", "IOWeight": "300",
		"KillMode": "mixed", "KillSignal": "37", "TimeoutStopUSec": "20s", "CollectMode": "inactive-or-failed",
		"Description": "berth machine " + name,
	})
	if before := show(t, unit, "Before")["Before"]; !strings.Contains(before, "berthd.service") {
		t.Errorf("Before=%s", before)
	}
	if after := show(t, unit, "After")["After"]; !strings.Contains(after, "systemd-machined.service") || !strings.Contains(after, "network.target") {
		t.Errorf("After=%s", after)
	}

	// Live changes; a limit no longer declared goes back to infinity.
	if err := s.SetResources(ctx, unit, Resources{MemoryMax: 512 << 20, CPUs: 0.5}); err != nil {
		t.Fatal(err)
	}
	expectProps(t, unit, map[string]string{"MemoryMax": "536870912", "TasksMax": "infinity", "CPUQuotaPerSecUSec": "500ms",
		"MemoryHigh": "infinity", "CPUWeight": "[not set]", "ActiveState": "active"})

	// A second scope for the same machine is refused with a clear message.
	other := sleeper(t)
	if _, _, err := s.StartScope(ctx, Scope{Machine: name, PIDs: []int{other.Process.Pid}}); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("second scope: %v", err)
	}

	// Anyone may send a signal to our connection: a RequestStop that does not
	// come from systemd is ignored.
	// The test watches the connection's signals itself to see the forged one
	// arrive.
	seen := make(chan *dbus.Signal, 16)
	s.conn.Signal(seen)
	forger := forgeRequestStop(t, ctx, s.UniqueName(), unit)
	for arrived := false; !arrived; {
		select {
		case sig := <-seen:
			arrived = sig.Sender == forger && sig.Name == systemdScope+".RequestStop"
		case <-time.After(5 * time.Second):
			t.Fatal("the forged RequestStop did not reach the connection")
		}
	}
	s.conn.RemoveSignal(seen)
	select {
	case <-stopAsked:
		t.Fatal("a RequestStop from another connection than systemd's was obeyed")
	case <-time.After(200 * time.Millisecond):
	}

	// systemctl stop asks the controller (us) instead of killing.
	start := time.Now()
	if out, err := exec.CommandContext(ctx, "systemctl", "stop", unit).CombinedOutput(); err != nil {
		t.Fatalf("systemctl stop: %v: %s", err, out)
	}
	select {
	case u := <-stopAsked:
		if u != unit {
			t.Errorf("RequestStop for %q, want %q", u, unit)
		}
	default:
		t.Error("systemctl stop did not ask the controller")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %v: systemd waited for its timeout instead of the controller", d)
	}
	if st, _ := s.ScopeState(ctx, unit); st != "inactive" {
		t.Errorf("after stop the scope is %q", st)
	}
}

// forgeRequestStop sends, from a connection of its own, the RequestStop signal
// systemd sends a scope's controller, straight to dest. It returns the sender's
// unique name.
func forgeRequestStop(t *testing.T, ctx context.Context, dest, unit string) string {
	t.Helper()
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msg := &dbus.Message{Type: dbus.TypeSignal, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldPath:        dbus.MakeVariant(unitPath(unit)),
		dbus.FieldInterface:   dbus.MakeVariant(systemdScope),
		dbus.FieldMember:      dbus.MakeVariant("RequestStop"),
		dbus.FieldDestination: dbus.MakeVariant(dest),
	}}
	if call := conn.SendWithContext(ctx, msg, nil); call.Err != nil {
		t.Fatalf("send a forged RequestStop: %v", call.Err)
	}
	return conn.Names()[0]
}

// TestSystemdStopAfterReexec: systemd's bus name changes when it re-executes;
// its RequestStop must still be obeyed afterwards.
func TestSystemdStopAfterReexec(t *testing.T) {
	ctx, s := needSystemd(t)
	sup := sleeper(t)
	stopAsked := make(chan string, 1)
	s.OnStopRequest(func(unit string) { stopAsked <- unit; sup.Process.Kill() })
	unit, _, err := s.StartScope(ctx, Scope{Machine: testenv.UniqueName("reexec"), PIDs: []int{sup.Process.Pid}, StopTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killScope(t, s, unit) })
	before := s.systemdOwner()
	if out, err := exec.CommandContext(ctx, "systemctl", "daemon-reexec").CombinedOutput(); err != nil {
		t.Fatalf("systemctl daemon-reexec: %v: %s", err, out)
	}
	if out, err := exec.CommandContext(ctx, "systemctl", "stop", unit).CombinedOutput(); err != nil {
		t.Fatalf("systemctl stop: %v: %s", err, out)
	}
	t.Logf("systemd's bus name: %s before daemon-reexec, %s after", before, s.systemdOwner())
	select {
	case <-stopAsked:
	default:
		t.Error("after daemon-reexec, systemctl stop did not ask the controller")
	}
}

func TestSystemdMachined(t *testing.T) {
	ctx, s := needSystemd(t)
	if !s.MachinedAvailable(ctx) {
		t.Fatal("systemd-machined is not available on the bus")
	}
	name := testenv.UniqueName("mach")
	sup, init1 := sleeper(t), sleeper(t)
	unit, _, err := s.StartScope(ctx, Scope{Machine: name, PIDs: []int{sup.Process.Pid, init1.Process.Pid}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killScope(t, s, unit) })
	m := Machine{Name: name, UUID: "0123456789abcdef0123456789abcdef", Leader: init1.Process.Pid, RootDirectory: "/"}
	if err := s.RegisterMachine(ctx, m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.UnregisterMachine(context.Background(), name) })
	// Registering again with the same leader (a retry) is fine.
	if err := s.RegisterMachine(ctx, m); err != nil {
		t.Errorf("re-register: %v", err)
	}
	info, err := s.MachineInfo(ctx, name)
	if err != nil || info == nil {
		t.Fatalf("MachineInfo: %+v, %v", info, err)
	}
	if info.Service != Service || info.Class != "container" || info.Leader != init1.Process.Pid || info.Unit != unit {
		t.Errorf("machined has %+v", info)
	}
	out, _ := exec.Command("machinectl", "list", "--no-legend", "--no-pager").CombinedOutput()
	if !strings.Contains(string(out), name) || !strings.Contains(string(out), "berth") {
		t.Errorf("machinectl list:\n%s", out)
	}
	out, _ = exec.Command("machinectl", "status", name, "--no-pager").CombinedOutput()
	if !strings.Contains(string(out), "Leader: "+strconv.Itoa(init1.Process.Pid)) || !strings.Contains(string(out), unit) {
		t.Errorf("machinectl status:\n%s", out)
	}
	out, _ = exec.Command("machinectl", "show", name, "-p", "Id").CombinedOutput()
	if strings.TrimSpace(string(out)) != "Id=0123456789abcdef0123456789abcdef" {
		t.Errorf("machinectl show -p Id: %s", out)
	}

	// Another live machine of the same name is refused, naming who has it.
	intruder := sleeper(t)
	err = s.RegisterMachine(ctx, Machine{Name: name, Leader: intruder.Process.Pid})
	if err == nil || !strings.Contains(err.Error(), "already has a running machine") || !strings.Contains(err.Error(), strconv.Itoa(init1.Process.Pid)) {
		t.Errorf("conflicting registration: %v", err)
	}

	if err := s.UnregisterMachine(ctx, name); err != nil {
		t.Fatal(err)
	}
	if info, _ := s.MachineInfo(ctx, name); info != nil {
		t.Errorf("still registered after unregister: %+v", info)
	}
	if err := s.UnregisterMachine(ctx, name); err != nil {
		t.Errorf("second unregister: %v", err)
	}
	if st, _ := s.ScopeState(ctx, unit); st != "active" {
		t.Errorf("unregistering stopped the scope: %s", st)
	}
}

func TestSystemdStaleRegistration(t *testing.T) {
	ctx, s := needSystemd(t)
	name := testenv.UniqueName("stale")
	sup, oldInit, newInit := sleeper(t), sleeper(t), sleeper(t)
	unit, _, err := s.StartScope(ctx, Scope{Machine: name, PIDs: []int{sup.Process.Pid, oldInit.Process.Pid, newInit.Process.Pid}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killScope(t, s, unit) })
	if err := s.RegisterMachine(ctx, Machine{Name: name, Leader: oldInit.Process.Pid}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.UnregisterMachine(context.Background(), name) })
	// The registered leader dies but its scope lives on: the registration is
	// stale, as after a supervisor that died without unregistering.
	oldInit.Process.Kill()
	oldInit.Wait()
	info, _ := s.MachineInfo(ctx, name)
	t.Logf("before re-registering, machined has: %+v", info)
	if err := s.RegisterMachine(ctx, Machine{Name: name, Leader: newInit.Process.Pid}); err != nil {
		t.Fatalf("register over a stale registration: %v", err)
	}
	info, err = s.MachineInfo(ctx, name)
	if err != nil || info == nil || info.Leader != newInit.Process.Pid {
		t.Errorf("after re-registering: %+v, %v", info, err)
	}
}

// TestSystemdNotifyAndJournal runs this test binary as a Type=notify service
// (what berthd.service is) whose helper sends READY=1 with a status and logs
// through NewLogHandler, then checks systemd saw READY and the journal has the
// structured fields.
func TestSystemdNotifyAndJournal(t *testing.T) {
	ctx, _ := needSystemd(t)
	if os.Getenv("BERTH_TEST_NOTIFY_HELPER") != "" {
		t.Skip("helper")
	}
	self, _ := os.Executable()
	machine := testenv.UniqueName("jour")
	unit := testenv.UniqueName("berth-notify") + ".service"
	start := time.Now()
	// The helper takes 2.5 s to get ready, longer than TimeoutStartSec and
	// WatchdogSec: it extends its start timeout, as berthd does during its first
	// pass, and sends no watchdog ping before READY=1 (systemd arms the
	// watchdog only then).
	out, err := exec.CommandContext(ctx, "systemd-run", "--unit", unit, "-p", "Type=notify", "-p", "WatchdogSec=2s", "-p", "TimeoutStartSec=1s",
		"--setenv=BERTH_TEST_NOTIFY_HELPER="+machine, self, "-test.run", "^TestNotifyHelper$").CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-run: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("systemctl", "stop", unit).Run() })
	// systemd-run returns once the start job is done: after READY=1.
	t.Logf("started in %v", time.Since(start))
	expectProps(t, unit, map[string]string{"ActiveState": "active", "StatusText": "ready: 0 machines", "NotifyAccess": "main"})
	// The helper changes its status only when told, after the test saw the
	// one READY=1 came with.
	if out, err := exec.CommandContext(ctx, "systemctl", "kill", "--kill-who=main", "--signal=SIGUSR1", unit).CombinedOutput(); err != nil {
		t.Fatalf("systemctl kill: %v: %s", err, out)
	}
	// The helper pings the watchdog; it must outlive WatchdogSec: systemd
	// had a ping from it more than WatchdogSec after READY=1 (when the unit
	// became active), and the unit is still active.
	testenv.Eventually(t, 15*time.Second, func() error {
		p := show(t, unit, "ActiveState", "StatusText", "ActiveEnterTimestampMonotonic", "WatchdogTimestampMonotonic")
		if p["ActiveState"] != "active" {
			return testenv.Stop(fmt.Errorf("the service is %s: did its watchdog fire? (%v)", p["ActiveState"], p))
		}
		ready, err1 := strconv.ParseInt(p["ActiveEnterTimestampMonotonic"], 10, 64)
		ping, err2 := strconv.ParseInt(p["WatchdogTimestampMonotonic"], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return testenv.Stop(fmt.Errorf("timestamps %v: %w", p, err))
		}
		if since := time.Duration(ping-ready) * time.Microsecond; since <= 2*time.Second || p["StatusText"] != "watching" {
			return fmt.Errorf("last watchdog ping %s after READY=1, want more than WatchdogSec (2s); status %q, want \"watching\"", since, p["StatusText"])
		}
		return nil
	})
	var entry map[string]any
	testenv.Eventually(t, 5*time.Second, func() error {
		out, _ = exec.Command("journalctl", "-o", "json", "--no-pager", "MACHINE="+machine).Output()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if line == "" {
			return errors.New("no journal entry with MACHINE=" + machine)
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			return testenv.Stop(err)
		}
		return nil
	})
	for k, v := range map[string]string{"MESSAGE": "machine started", "PRIORITY": "4", "NETWORK": "lan",
		"SYSLOG_IDENTIFIER": "berthd", "_SYSTEMD_UNIT": unit} {
		if entry[k] != v {
			t.Errorf("journal %s=%v, want %s", k, entry[k], v)
		}
	}
}

// TestNotifyHelper is the service TestSystemdNotifyAndJournal starts.
func TestNotifyHelper(t *testing.T) {
	machine := os.Getenv("BERTH_TEST_NOTIFY_HELPER")
	if machine == "" {
		t.Skip("only run as a service by TestSystemdNotifyAndJournal")
	}
	n, err := NewNotifier()
	if err != nil || !n.Enabled() || n.WatchdogInterval() != 2*time.Second {
		t.Fatalf("notifier: enabled %v watchdog %v err %v", n.Enabled(), n.WatchdogInterval(), err)
	}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		t.Error("NOTIFY_SOCKET is still in the environment")
	}
	if !UseJournal() {
		t.Error("a service's logs should go to the journal")
	}
	log := slog.New(NewLogHandler(os.Stderr, nil))
	log.Warn("machine started", "machine", machine, "network", "lan")
	for deadline := time.Now().Add(2500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		if err := n.ExtendTimeout(time.Second); err != nil {
			t.Error(err)
		}
	}
	// SIGUSR1, which the test sends once it saw the status of READY=1, sets
	// the next one; SIGTERM ends the service.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGUSR1)
	n.Ready("ready: 0 machines")
	ctx, cancel := context.WithCancel(context.Background())
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		n.Watchdog(ctx, func() bool { return true })
	}()
	for s := range sig {
		if s != syscall.SIGUSR1 {
			break
		}
		n.Status("watching")
	}
	cancel()
	<-pinged
	n.Stopping()
}

// TestSystemdScopeWithoutController pins down what ScopeProperties' comment
// says: with KillMode=mixed a scope (which has no main process) whose controller
// is gone gets no KillSignal on stop; systemd goes straight to SIGKILL. Its
// processes are never sprayed with SIGRTMIN+3 or SIGTERM.
func TestSystemdScopeWithoutController(t *testing.T) {
	ctx, s := needSystemd(t)
	name := testenv.UniqueName("noctl")
	p := sleeper(t)
	props, err := ScopeProperties(Scope{Machine: name, PIDs: []int{p.Process.Pid}})
	if err != nil {
		t.Fatal(err)
	}
	unit := ScopeName(name)
	if err := s.startTransient(ctx, unit, props); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killScope(t, s, unit) })
	if out, err := exec.CommandContext(ctx, "systemctl", "stop", unit).CombinedOutput(); err != nil {
		t.Fatalf("systemctl stop: %v: %s", err, out)
	}
	err = p.Wait()
	ws, _ := p.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the process ended with %v (%v), want SIGKILL", ws, err)
	}
}
