package container_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/testenv"
)

// TestApplicationProcess runs an application as a user of its own, with
// supplementary groups, an ambient capability, a working directory,
// resource limits and no_new_privs, and extra masked and read-only paths
// (what an OCI bundle's process and linux sections ask for): with the
// host's IDs, and in a user namespace of the machine's own, where the IDs
// are the machine's.
func TestApplicationProcess(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	lower := testenv.BusyboxGuest(t)
	script := strings.Join([]string{
		`echo "ids=$(id -u):$(id -g) groups=$(id -G)"`,
		`echo "pwd=$(pwd)"`,
		`echo "nofile=$(ulimit -Sn)/$(ulimit -Hn) core=$(ulimit -Hc)"`,
		`grep -E '^(NoNewPrivs|CapAmb|CapEff|CapPrm):' /proc/self/status | tr -d '\t'`,
		`echo "cmdline=[$(cat /proc/cmdline 2>&1)]"`,
		`echo "firmware=[$(ls /sys/firmware 2>&1)]"`,
		// berth's own writable /proc/sys/net, then the read-only one on it.
		`awk '$5 == "/proc/sys/net" { print "proc-sys-net", substr($6, 1, 2) }' /proc/self/mountinfo | tail -1`,
		`echo "home=$HOME user=$USER"`,
	}, "; ")
	for _, tc := range []struct {
		name  string
		users bool
		nnp   bool
	}{
		{"host IDs", false, true},
		{"private users", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := newConfig(t, "proc")
			overlayRoot(t, &cfg, lower)
			if tc.users {
				cfg.Users = testUsers(t)
			}
			cfg.Args = []string{"/bin/sh", "-c", script}
			cfg.User = &container.User{UID: 1000, GID: 1001, Groups: []uint32{1002, 1003}}
			cfg.AmbientCaps = []string{"CAP_NET_BIND_SERVICE"}
			// The command still becomes its user (the reaper's fork
			// keeps what that needs), and holds neither afterwards.
			cfg.CapDrop = []string{"CAP_SETUID", "CAP_SETGID"}
			cfg.WorkingDir = "/tmp"
			cfg.NoNewPrivileges = tc.nnp
			cfg.Rlimits = []container.Rlimit{{Type: "RLIMIT_NOFILE", Soft: 1000, Hard: 2000}, {Type: "core", Soft: 0, Hard: 0}}
			cfg.MaskedPaths = []string{"/proc/cmdline", "/sys/firmware", "/proc/no-such-file"}
			cfg.ReadOnlyPaths = []string{"/proc/sys/net"}
			ex, err := container.Supervise(context.Background(), cfg, container.Hooks{})
			b, _ := os.ReadFile(cfg.ConsoleLog)
			log := string(b)
			if err != nil || ex.Code != 0 {
				t.Fatalf("exit %v, %v:\n%s", ex, err, log)
			}
			nnp := map[bool]string{true: "NoNewPrivs:1", false: "NoNewPrivs:0"}[tc.nnp]
			for _, want := range []string{
				"ids=1000:1001 groups=1001 1002 1003", "pwd=/tmp", "nofile=1000/2000 core=0", nnp,
				"CapAmb:0000000000000400", "CapEff:0000000000000400", "CapPrm:0000000000000400",
				"/proc/cmdline': Permission denied]", "/sys/firmware': Permission denied]", "proc-sys-net ro", "home= user=",
			} {
				if !strings.Contains(log, want) {
					t.Errorf("console lacks %q:\n%s", want, log)
				}
			}
		})
	}
	t.Run("a working directory the machine lacks", func(t *testing.T) {
		cfg := newConfig(t, "proc")
		cfg.Root = container.Root{Dir: lower, ReadOnly: true}
		cfg.Args = []string{"/bin/true"}
		cfg.User = &container.User{UID: 1000, GID: 1000}
		cfg.WorkingDir = "/root/private"
		_, err := container.Supervise(context.Background(), cfg, container.Hooks{})
		if err == nil || !strings.Contains(err.Error(), "start /bin/true as uid 1000, gid 1000 in /root/private") {
			t.Errorf("error: %v", err)
		}
	})
}
