package units

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/coreos/go-systemd/v22/journal"

	"github.com/berthd/berth/internal/testenv"
)

func TestEscapeUnitName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"web", "web"},
		{"web-1", `web\x2d1`},
		{"a.b_c:d", "a.b_c:d"},
		{".hidden", `\x2ehidden`},
		{"a/b", "a-b"},
		{"Ünï", `\xc3\x9cn\xc3\xaf`},
	} {
		if got := EscapeUnitName(tc.in); got != tc.want {
			t.Errorf("EscapeUnitName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got, want := ScopeName("db-2"), `machine-db\x2d2.scope`; got != want {
		t.Errorf("ScopeName = %q, want %q", got, want)
	}
}

func propMap(ps []sddbus.Property) map[string]any {
	m := map[string]any{}
	for _, p := range ps {
		m[p.Name] = p.Value.Value()
	}
	return m
}

func TestResourceProperties(t *testing.T) {
	inf := uint64(math.MaxUint64)
	for _, tc := range []struct {
		name string
		in   Resources
		want map[string]any
		err  string
	}{
		{"none: all unlimited", Resources{}, map[string]any{
			"MemoryMax": inf, "MemoryHigh": inf, "CPUQuotaPerSecUSec": inf,
			"CPUWeight": inf, "TasksMax": inf, "IOWeight": inf}, ""},
		{"all set", Resources{MemoryMax: 512 << 20, MemoryHigh: 400 << 20, CPUs: 1.5, CPUWeight: 200, PidsMax: 1000, IOWeight: 50},
			map[string]any{"MemoryMax": uint64(512 << 20), "MemoryHigh": uint64(400 << 20), "CPUQuotaPerSecUSec": uint64(1500000),
				"CPUWeight": uint64(200), "TasksMax": uint64(1000), "IOWeight": uint64(50)}, ""},
		{"quarter cpu", Resources{CPUs: 0.25}, map[string]any{"CPUQuotaPerSecUSec": uint64(250000)}, ""},
		{"two cpus", Resources{CPUs: 2}, map[string]any{"CPUQuotaPerSecUSec": uint64(2000000)}, ""},
		{"negative memory", Resources{MemoryMax: -1}, nil, "must not be negative"},
		{"negative cpus", Resources{CPUs: -0.5}, nil, "positive number"},
		{"tiny cpus", Resources{CPUs: 1e-9}, nil, "below one microsecond"},
		{"cpu weight too big", Resources{CPUWeight: 10001}, nil, "cpu weight 10001"},
		{"io weight too big", Resources{IOWeight: 20000}, nil, "io weight 20000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := ResourceProperties(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := propMap(ps)
			if len(got) != 11 {
				t.Errorf("got %d properties, want all 11: %v", len(got), got)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v (%T), want %v (%T)", k, got[k], got[k], v, v)
				}
			}
		})
	}
}

func TestScopeProperties(t *testing.T) {
	ps, err := ScopeProperties(Scope{Machine: "web", PIDs: []int{42}, StopTimeout: 20 * time.Second,
		Controller: ":1.7", Resources: Resources{MemoryMax: 1 << 30},
		DeviceAllow: []DeviceAllow{{"/dev/null", "rwm"}, {"char-pts", "rwm"}}})
	if err != nil {
		t.Fatal(err)
	}
	got := propMap(ps)
	want := map[string]any{
		"PIDs":            []uint32{42},
		"Slice":           "machine.slice",
		"Description":     "berth machine web",
		"Delegate":        true,
		"CollectMode":     "inactive-or-failed",
		"KillMode":        "mixed",
		"KillSignal":      int32(37), // SIGRTMIN+3
		"TimeoutStopUSec": uint64(35 * time.Second / time.Microsecond),
		"Controller":      ":1.7",
		"MemoryMax":       uint64(1 << 30),
		"Before":          []string{"berthd.service"},
		"After":           []string{"local-fs.target", "remote-fs.target", "network.target", "dbus.service", "systemd-machined.service"},
		"DevicePolicy":    "closed",
		"DeviceAllow":     []struct{ Path, Access string }{{"/dev/null", "rwm"}, {"char-pts", "rwm"}},
	}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if _, ok := got["AddRef"]; ok {
		t.Error("AddRef is set; the scope's creator lives inside it, see ScopeProperties")
	}
	for _, bad := range []Scope{{PIDs: []int{1}}, {Machine: "x"}, {Machine: "x", PIDs: []int{0}}, {Machine: "x", PIDs: []int{1}, Resources: Resources{CPUWeight: 99999}}} {
		if _, err := ScopeProperties(bad); err == nil {
			t.Errorf("ScopeProperties(%+v) succeeded, want an error", bad)
		}
	}
	// The default stop timeout is systemd's 90 s, plus the margin.
	ps, _ = ScopeProperties(Scope{Machine: "x", PIDs: []int{1}})
	if got := propMap(ps)["TimeoutStopUSec"]; got != uint64(105*time.Second/time.Microsecond) {
		t.Errorf("default TimeoutStopUSec = %v", got)
	}
}

// A helper's scope (a network's resolver) is its own, in system.slice, not
// berthd.service's: restarting berthd leaves it.
func TestHelperScopeProperties(t *testing.T) {
	if got := HelperScopeName("dns", "lan-1"); got != `berth-dns-lan\x2d1.scope` {
		t.Errorf("HelperScopeName = %s", got)
	}
	ps, err := HelperScopeProperties(HelperScope{Unit: "berth-dns-lan.scope", Description: "d", PID: 42})
	if err != nil {
		t.Fatal(err)
	}
	got := propMap(ps)
	for k, v := range map[string]any{"PIDs": []uint32{42}, "Slice": "system.slice", "Description": "d", "CollectMode": "inactive-or-failed"} {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	for _, bad := range []HelperScope{{PID: 1}, {Unit: "x.scope"}} {
		if _, err := HelperScopeProperties(bad); err == nil {
			t.Errorf("HelperScopeProperties(%+v) succeeded", bad)
		}
	}
}

func TestUnitFilesGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Install
	}{
		{"usr-local", Install{Prefix: "/usr/local"}},
		{"opt", Install{Prefix: "/opt/berth", ConfigPath: "/opt/berth/etc/berthd.yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, err := UnitFiles(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range files {
				testenv.Golden(t, filepath.Join("testdata", tc.name+"."+f.Name), f.Content)
			}
		})
	}
	for _, bad := range []Install{{Prefix: "usr/local"}, {Prefix: "/usr/my local"}, {Prefix: "/x", ConfigPath: "/etc/$x"}} {
		if _, err := UnitFiles(bad); err == nil {
			t.Errorf("UnitFiles(%+v) succeeded, want an error", bad)
		}
	}
}

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"machine": "MACHINE", "err": "ERR", "reconcile-id": "RECONCILE_ID",
		"_secret": "SECRET", "9lives": "F_9LIVES", "": "F_", "net.name": "NET_NAME",
	} {
		if got := FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPriority(t *testing.T) {
	for l, want := range map[slog.Level]journal.Priority{
		slog.LevelDebug: journal.PriDebug, slog.LevelInfo: journal.PriInfo, slog.LevelInfo + 2: journal.PriNotice,
		slog.LevelWarn: journal.PriWarning, slog.LevelError: journal.PriErr, slog.LevelError + 4: journal.PriErr,
	} {
		if got := Priority(l); got != want {
			t.Errorf("Priority(%v) = %v, want %v", l, got, want)
		}
	}
}

type sent struct {
	msg    string
	prio   journal.Priority
	fields map[string]string
}

func TestJournalHandlerFields(t *testing.T) {
	var got []sent
	h := NewJournalHandler("berthd", &slog.HandlerOptions{Level: slog.LevelDebug, AddSource: true})
	h.send = func(msg string, prio journal.Priority, fields map[string]string) error {
		got = append(got, sent{msg, prio, fields})
		return nil
	}
	log := slog.New(h).With("reconcile", 7)
	log.Warn("machine restarted", "machine", "web", "network", "lan", "err", errors.New("init exited 1"))
	log.WithGroup("image").Debug("pulled", "name", "debian", slog.Group("size", "bytes", 10))
	if len(got) != 2 {
		t.Fatalf("sent %d entries, want 2", len(got))
	}
	e := got[0]
	if e.msg != "machine restarted" || e.prio != journal.PriWarning {
		t.Errorf("entry 0 = %q prio %d", e.msg, e.prio)
	}
	for k, v := range map[string]string{"MACHINE": "web", "NETWORK": "lan", "ERR": "init exited 1",
		"RECONCILE": "7", "SYSLOG_IDENTIFIER": "berthd", "CODE_FUNC": "github.com/berthd/berth/units.TestJournalHandlerFields"} {
		if e.fields[k] != v {
			t.Errorf("entry 0 field %s = %q, want %q", k, e.fields[k], v)
		}
	}
	if !strings.HasSuffix(e.fields["CODE_FILE"], "units_test.go") || e.fields["CODE_LINE"] == "" {
		t.Errorf("entry 0 source = %s:%s", e.fields["CODE_FILE"], e.fields["CODE_LINE"])
	}
	e = got[1]
	if e.prio != journal.PriDebug || e.fields["IMAGE_NAME"] != "debian" || e.fields["IMAGE_SIZE_BYTES"] != "10" || e.fields["RECONCILE"] != "7" {
		t.Errorf("entry 1 = %+v", e)
	}
	if h.Enabled(context.Background(), slog.LevelDebug-1) {
		t.Error("enabled below its level")
	}
}

func TestUUIDBytes(t *testing.T) {
	b, err := uuidBytes("0123456789abcdef0123456789ABCDEF")
	if err != nil || len(b) != 16 || b[0] != 0x01 || b[15] != 0xef {
		t.Errorf("uuidBytes = %x, %v", b, err)
	}
	if b, err := uuidBytes("01234567-89ab-cdef-0123-456789abcdef"); err != nil || len(b) != 16 {
		t.Errorf("dashed uuid: %x, %v", b, err)
	}
	if b, err := uuidBytes(""); err != nil || len(b) != 0 {
		t.Errorf("empty uuid: %x, %v", b, err)
	}
	if _, err := uuidBytes("xyz"); err == nil {
		t.Error("bad uuid accepted")
	}
}

func TestUnitPathRoundTrip(t *testing.T) {
	for _, u := range []string{`machine-web\x2d1.scope`, "machine-web.scope", "berthd.service"} {
		got, ok := unitFromPath(unitPath(u))
		if !ok || got != u {
			t.Errorf("unitFromPath(unitPath(%q)) = %q, %v", u, got, ok)
		}
	}
}

// TestNotifierAbstractSocket holds NewNotifier to what berthd needs of it
// without systemd: an "@name" NOTIFY_SOCKET is an abstract socket, the variables
// leave the environment at once (the supervisors must not inherit them), and
// the messages still reach the socket afterwards.
func TestNotifierAbstractSocket(t *testing.T) {
	name, next := testenv.NotifySocket(t)
	for _, tc := range []struct {
		pid  string
		want time.Duration
	}{{"", 3 * time.Second}, {strconv.Itoa(os.Getpid()), 3 * time.Second}, {"1", 0}} {
		t.Setenv("NOTIFY_SOCKET", name)
		t.Setenv("WATCHDOG_USEC", "3000000")
		t.Setenv("WATCHDOG_PID", tc.pid)
		n, err := NewNotifier()
		if err != nil || !n.Enabled() || n.WatchdogInterval() != tc.want {
			t.Fatalf("WATCHDOG_PID=%q: enabled %v, watchdog %v, %v; want %v", tc.pid, n.Enabled(), n.WatchdogInterval(), err, tc.want)
		}
		for _, k := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
			if v, ok := os.LookupEnv(k); ok {
				t.Errorf("%s=%s is still in the environment", k, v)
			}
		}
		for _, m := range []struct {
			send func() error
			want string
		}{
			{func() error { return n.Ready("up") }, "READY=1\nSTATUS=up\nMAINPID=" + strconv.Itoa(os.Getpid())},
			{func() error { return n.Status("busy") }, "STATUS=busy"},
			{n.Stopping, "STOPPING=1"},
			{func() error { return n.ExtendTimeout(90 * time.Second) }, "EXTEND_TIMEOUT_USEC=90000000"},
			{n.Reloading, "RELOADING=1\nMONOTONIC_USEC="},
		} {
			if err := m.send(); err != nil {
				t.Fatal(err)
			}
			if got := next(); !strings.HasPrefix(got, m.want) {
				t.Errorf("got %q, want %q", got, m.want)
			}
		}
		n.Close()
	}
}
