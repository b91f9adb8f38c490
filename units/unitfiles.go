package units

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Install describes one installation of berth, the input of the unit files.
type Install struct {
	Prefix     string // where the binaries go: Prefix/bin/berth, Prefix/bin/berthd
	ConfigPath string // berthd's configuration file
}

// BerthdUnit is the name of berthd's service unit.
const BerthdUnit = "berthd.service"

// UnitDir is where `berth install` writes unit files: the administrator's
// directory, which wins over vendor units and works for every prefix.
const UnitDir = "/etc/systemd/system"

// UnitFile is one rendered unit file.
type UnitFile struct {
	Name     string   // "berthd.service"
	Content  string   // the file
	WantedBy []string // targets whose .wants/ gets a link when enabled
}

// UnitFiles renders every unit file berth installs. Machines need none of their
// own: berthd starts each machine's supervisor, which creates a transient
// machine-NAME.scope; at shutdown systemd stops those scopes, which asks each
// supervisor (the scope's Controller) to power its guest off cleanly (see
// ScopeProperties and docs/systemd.md).
func UnitFiles(in Install) ([]UnitFile, error) {
	if !filepath.IsAbs(in.Prefix) {
		return nil, fmt.Errorf("install prefix %q must be an absolute path", in.Prefix)
	}
	if in.ConfigPath == "" {
		in.ConfigPath = "/etc/berth/berthd.yaml"
	}
	svc, err := BerthdService(in)
	if err != nil {
		return nil, err
	}
	return []UnitFile{{Name: BerthdUnit, Content: svc, WantedBy: []string{"multi-user.target", "machines.target"}}}, nil
}

// BerthdService renders berthd.service. Pure, golden-tested.
//
// The choices, and why:
//   - Type=notify: berthd sends READY=1 after its first reconcile, so "started"
//     means the declared machines were started; units after machines.target (which
//     berthd.service is Before=) see them running. That first pass may build
//     images for many minutes: while it runs berthd sends EXTEND_TIMEOUT_USEC
//     every 30 s (Notifier.ExtendTimeout), so TimeoutStartSec need only cover
//     its start-up before the pass, and a berthd stuck before it fails its start
//     (and is restarted) instead of holding the boot for long.
//   - ExecReload sends SIGHUP, on which berthd reads every source again and
//     reconciles at once.
//   - OOMScoreAdjust=-500 makes berthd one of the OOM killer's last choices; each
//     supervisor sets its own oom_score_adj back to 0, so the machines do not
//     inherit it.
//   - KillMode=process: stopping or restarting berthd signals berthd only. The
//     machines run in their own scopes in machine.slice, outside berthd.service,
//     and berthd re-adopts them when it starts again.
//   - Restart=on-failure and WatchdogSec: a hung or crashed berthd is restarted;
//     a restart costs the machines nothing.
//   - After=network.target (not network-online.target, which can delay boot by
//     minutes): berth makes its own bridges; machined and D-Bus are wanted
//     because registration and scopes go through them.
//   - No RuntimeDirectory=: systemd would delete /run/berth, which holds the
//     running machines' control sockets, whenever berthd stops.
func BerthdService(in Install) (string, error) {
	if strings.ContainsAny(in.Prefix+in.ConfigPath, " \t\n\"'\\%$") {
		return "", fmt.Errorf("install paths %q and %q must not contain spaces, quotes, %%, $ or backslashes", in.Prefix, in.ConfigPath)
	}
	berthd := filepath.Join(in.Prefix, "bin", "berthd")
	var b strings.Builder
	w := func(s ...string) {
		for _, l := range s {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	w("# Written by `berth install`; `berth uninstall` removes it. Local changes belong",
		"# in a drop-in: systemctl edit berthd.service",
		"[Unit]",
		"Description=berth machine manager",
		"Wants=dbus.service",
		"After=network.target local-fs.target remote-fs.target dbus.service systemd-machined.service",
		"Before=machines.target",
		"",
		"[Service]",
		"Type=notify",
		"NotifyAccess=main",
		"ExecStart="+berthd+" --config "+in.ConfigPath,
		"# systemctl reload berthd: SIGHUP makes berthd read every source again and",
		"# reconcile now (the command returns once the signal is sent).",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"KillMode=process",
		"Restart=on-failure",
		"RestartSec=2s",
		"WatchdogSec=2min",
		"# Covers berthd's start-up until its first reconcile begins; during that",
		"# pass (which may build images) berthd extends it every 30 s.",
		"TimeoutStartSec=5min",
		"TimeoutStopSec=30s",
		"# Supervisors start in this cgroup for a moment, before they move into",
		"# their machine's scope: do not let TasksMax cap the number of machines.",
		"TasksMax=infinity",
		"LimitNOFILE=1048576",
		"# Only berthd: each machine's supervisor resets its oom_score_adj to 0.",
		"OOMScoreAdjust=-500",
		"",
		"[Install]",
		"WantedBy=multi-user.target machines.target",
	)
	return b.String(), nil
}
