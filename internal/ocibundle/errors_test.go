package ocibundle

import (
	"reflect"
	"strings"
	"testing"

	"github.com/berthd/berth/container"
)

// runcNS is runc spec's linux.namespaces as JSON, for patches that change it.
const runcNS = `{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}`

// fieldCase is a patch of runc spec's config.json and the errors berth
// gives for it (each the start of one error's text, all of them, in
// order), or none.
type fieldCase struct {
	name, patch string
	want        []string
}

func testFields(t *testing.T, cases []fieldCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(bundleDir(t, patched(t, tc.patch)))
			checkErrors(t, err, tc.want)
		})
	}
}

// TestFields: fields berth refuses, and the process's fields.
func TestFields(t *testing.T) {
	testFields(t, []fieldCase{
		{"devices", `{"linux": {"devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]}}`,
			[]string{"linux.devices: not supported by berth: a machine gets berth's own device nodes only"}},
		{"hooks", `{"hooks": {"prestart": [{"path": "/bin/true"}]}}`, []string{"hooks: not supported by berth: berth runs no OCI hooks"}},
		{"empty hooks", `{"hooks": {"prestart": []}}`, nil},
		{"annotations", `{"annotations": {"org.example": "x"}}`, nil},
		{"seccomp", `{"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}}}`,
			[]string{"linux.seccomp: not supported by berth: berth applies its own system call filter (change it with --system-call-filter)"}},
		{"cgroups path", `{"linux": {"cgroupsPath": "/mine"}}`, []string{"linux.cgroupsPath: not supported by berth: berth puts each machine in a cgroup of its own"}},
		{"sysctl", `{"linux": {"sysctl": {"net.ipv4.ip_forward": "1"}}}`, []string{"linux.sysctl: not supported by berth"}},
		{"unknown field", `{"process": {"bogus": 1}}`, []string{"process.bogus: not supported by berth"}},
		{"oom score 0 is a value", `{"process": {"oomScoreAdj": 0}}`, []string{"process.oomScoreAdj: not supported by berth"}},
		{"console size", `{"process": {"consoleSize": {"height": 24, "width": 80}}}`,
			[]string{"process.consoleSize: not supported by berth: the console takes the size of berth's terminal"}},
		{"domainname", `{"domainname": "example"}`, []string{"domainname: not supported by berth"}},
		{"several at once", `{"hooks": {"poststop": [{"path": "/x"}]}, "linux": {"devices": [{"path": "/dev/x"}], "personality": {"domain": "LINUX32"}}}`,
			[]string{"hooks: not supported", "linux.devices: not supported", "linux.personality: not supported by berth"}},
		{"ociVersion", `{"ociVersion": "2.0.0"}`, []string{`ociVersion: "2.0.0": berth reads version 1 of the OCI runtime spec`}},
		{"effective not the bounding set", `{"process": {"capabilities": {"effective": ["CAP_KILL"]}}}`,
			[]string{"process.capabilities.effective: berth gives uid 0 its whole bounding set, as the kernel gives root on exec; make it the same as bounding (it differs by CAP_AUDIT_WRITE, CAP_NET_BIND_SERVICE)"}},
		{"a user's effective not its ambient set", `{"process": {"user": {"uid": 1000, "gid": 1000}, "capabilities": {"ambient": ["CAP_KILL"], "permitted": ["CAP_KILL"]}}}`,
			[]string{"process.capabilities.effective: a user other than root holds exactly its ambient capabilities after its exec; make it the same as ambient (it differs by CAP_AUDIT_WRITE, CAP_NET_BIND_SERVICE)"}},
		{"ambient outside the bounding set", `{"process": {"capabilities": {"ambient": ["CAP_SYS_ADMIN"]}}}`,
			[]string{"process.capabilities.ambient: CAP_SYS_ADMIN not in the bounding set"}},
		{"inheritable beyond ambient", `{"process": {"capabilities": {"inheritable": ["CAP_SYS_ADMIN"]}}}`,
			[]string{"process.capabilities.inheritable: CAP_SYS_ADMIN: berth's inheritable set is the ambient set"}},
		{"unknown capability", `{"process": {"capabilities": {"bounding": ["CAP_FLY", "CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"], "ambient": []}}}`,
			[]string{`process.capabilities.bounding[0]: unknown capability "CAP_FLY"`}},
		{"rlimit type", `{"process": {"rlimits": [{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}]}}`, []string{`process.rlimits[0]: type "RLIMIT_FOO": want one of RLIMIT_AS`}},
		{"rlimit soft above hard", `{"process": {"rlimits": [{"type": "RLIMIT_CORE", "soft": 2, "hard": 1}]}}`,
			[]string{"process.rlimits[0]: RLIMIT_CORE: soft limit 2 above the hard limit 1"}},
		{"rlimit twice", `{"process": {"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}, {"type": "RLIMIT_NOFILE", "soft": 2, "hard": 2}]}}`,
			[]string{`process.rlimits[1].type: "RLIMIT_NOFILE" given twice`}},
		{"umask", `{"process": {"user": {"uid": 0, "gid": 0, "umask": 63}}}`, []string{"process.user.umask: 077: berth starts the process with umask 0022"}},
		{"umask 022", `{"process": {"user": {"uid": 0, "gid": 0, "umask": 18}}}`, nil},
		{"no args", `{"process": {"args": []}}`, []string{"process.args: missing"}},
		{"program not in PATH", `{"process": {"args": ["nosuch"]}}`, []string{`process.args[0]: "nosuch": not found in the root's /usr/local/sbin`}},
		{"relative cwd", `{"process": {"cwd": "tmp"}}`, []string{`process.cwd: "tmp": must be an absolute path`}},
		{"env", `{"process": {"env": ["PATH=/bin", "BROKEN"]}}`, []string{`process.env[1]: "BROKEN": want KEY=VALUE`}},
		{"no process", `{"process": null}`, []string{"process: missing: berth runs the bundle's process"}},
		{"hostname", `{"hostname": "` + strings.Repeat("h", 65) + `"}`, []string{`hostname: "hhh`}},
		{"no root", `{"root": {"path": "nosuch"}}`, []string{`root.path: "nosuch": not a directory`}},
	})
}

// TestLinuxFields: namespaces, mappings, masks, resources and mounts.
func TestLinuxFields(t *testing.T) {
	testFields(t, []fieldCase{
		{"join a namespace", `{"linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}}`,
			[]string{"linux.namespaces[1].path: not supported by berth: berth makes each namespace anew and joins none"}},
		{"no uts namespace", `{"linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}]}}`,
			[]string{`linux.namespaces: no "uts" namespace: berth always gives a machine one of its own; add {"type": "uts"}`}},
		{"time namespace", `{"linux": {"namespaces": [` + runcNS + `, {"type": "time"}]}}`,
			[]string{`linux.namespaces[5].type: "time": not supported by berth`}},
		{"namespace twice", `{"linux": {"namespaces": [` + runcNS + `, {"type": "pid"}]}}`, []string{`linux.namespaces[5].type: "pid" given twice`}},
		{"cgroup namespace", `{"linux": {"namespaces": [` + runcNS + `, {"type": "cgroup"}]}}`, nil},
		{"mappings without a user namespace", `{"linux": {"uidMappings": [{"containerID": 0, "hostID": 65536, "size": 65536}]}}`,
			[]string{"linux.uidMappings: given without a user namespace"}},
		{"mappings of two ranges", `{"linux": {"namespaces": [` + runcNS + `, {"type": "user"}], "uidMappings": [{"containerID": 0, "hostID": 65536, "size": 1000}, {"containerID": 1000, "hostID": 200000, "size": 64536}], "gidMappings": [{"containerID": 0, "hostID": 65536, "size": 65536}]}}`,
			[]string{"linux.uidMappings: [{containerID 0, hostID 65536, size 1000}, {containerID 1000, hostID 200000, size 64536}]: berth maps"}},
		{"users and groups apart", `{"linux": {"namespaces": [` + runcNS + `, {"type": "user"}], "uidMappings": [{"containerID": 0, "hostID": 65536, "size": 65536}], "gidMappings": [{"containerID": 0, "hostID": 131072, "size": 65536}]}}`,
			[]string{"linux.gidMappings: host IDs from 131072, but uidMappings' from 65536"}},
		{"masked outside /proc and /sys", `{"linux": {"maskedPaths": ["/proc/kcore", "/etc/shadow"]}}`,
			[]string{`linux.maskedPaths[1]: "/etc/shadow": berth masks and makes read-only only paths below /proc and /sys`}},
		{"memory swap", `{"linux": {"resources": {"memory": {"limit": 67108864, "swap": 67108864}}}}`, []string{"linux.resources.memory.swap: not supported by berth"}},
		{"cpu period alone", `{"linux": {"resources": {"cpu": {"period": 50000}}}}`,
			[]string{"linux.resources.cpu.period: without a quota it sets no limit"}},
		{"bad cpu set", `{"linux": {"resources": {"cpu": {"cpus": "1-0"}}}}`, []string{"linux.resources.cpu.cpus: \"1-0\": a range goes from the lower CPU to the higher"}},
		{"memory nodes", `{"linux": {"resources": {"cpu": {"mems": "0"}}}}`, []string{"linux.resources.cpu.mems: not supported by berth"}},
		{"no pids limit", `{"linux": {"resources": {"pids": {"limit": -1}}}}`, []string{"linux.resources.pids.limit: -1: berth always limits a machine's tasks"}},
		{"unified", `{"linux": {"resources": {"unified": {"memory.high": "1G"}}}}`, []string{"linux.resources.unified: not supported by berth"}},
		{"a device berth allows anyway", `{"linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}, {"allow": true, "type": "c", "major": 136, "access": "rw"}]}}}`, nil},
		{"a device berth does not give", `{"linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"}]}}}`,
			[]string{"linux.resources.devices[1]: allows a device berth does not give a machine"}},
		{"a deny rule for some devices", `{"linux": {"resources": {"devices": [{"allow": false, "type": "b", "access": "rwm"}]}}}`,
			[]string{"linux.resources.devices[0]: berth's device policy denies every device but its own"}},

		{"nfs", `{"mounts": [{"destination": "/data", "type": "nfs", "source": "srv:/x"}]}`,
			[]string{`mounts[0].type: "nfs": berth mounts bind and tmpfs only`}},
		{"proc elsewhere", `{"mounts": [{"destination": "/proc2", "type": "proc", "source": "proc"}]}`, []string{`mounts[0].type: "proc": berth mounts bind and tmpfs only`}},
		{"tmpfs on /proc", `{"mounts": [{"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}]}`,
			[]string{`mounts[0]: "tmpfs" on /proc: every machine has berth's own mount there; give type proc, or leave the mount out`}},
		{"bind options", `{"mounts": [{"destination": "/data", "type": "bind", "source": "rootfs", "options": ["rbind", "noexec", "ro"]}]}`,
			[]string{`mounts[0].options[1]: "noexec": not supported for a bind by berth`}},
		{"bind source", `{"mounts": [{"destination": "/data", "type": "none", "source": "/nonexistent", "options": ["bind"]}]}`,
			[]string{`mounts[0].source: "/nonexistent": stat /nonexistent: no such file or directory`}},
		{"idmapped bind", `{"mounts": [{"destination": "/data", "type": "bind", "source": "rootfs", "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}]}`,
			[]string{"mounts[0].uidMappings: not supported by berth: berth idmaps no bind of a bundle"}},
		{"tmpfs options", `{"mounts": [{"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "noexec", "mode=0700"]}]}`,
			[]string{`mounts[0].options[1]: "noexec": not supported for a tmpfs by berth`}},
		{"relative destination", `{"mounts": [{"destination": "data", "type": "tmpfs"}]}`, []string{`mounts[0].destination: "data": must be an absolute path`}},
	})
}

// TestConversions: what the fields berth reads become.
func TestConversions(t *testing.T) {
	for _, tc := range []struct {
		name, patch string
		check       func(b *Bundle) bool
	}{
		{"resources", `{"linux": {"resources": {"memory": {"limit": 67108864}, "cpu": {"quota": 50000, "period": 100000, "shares": 1024, "cpus": "1,0"}, "pids": {"limit": 100}, "blockIO": {"weight": 500}}}}`,
			func(b *Bundle) bool {
				return reflect.DeepEqual(b.Config.Resources, container.Resources{MemoryMax: 64 << 20, CPUs: 0.5, CPUWeight: 39, PidsMax: 100, IOWeight: 4950, CPUSet: "0-1"})
			}},
		{"no limits", `{"linux": {"resources": {"memory": {"limit": -1}, "cpu": {"quota": -1}, "pids": {"limit": 0}}}}`,
			func(b *Bundle) bool { return reflect.DeepEqual(b.Config.Resources, container.Resources{}) }},
		{"host network", `{"linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}}`,
			func(b *Bundle) bool { return b.Config.NetworkMode == "host" }},
		{"user namespace, berth's pick", `{"linux": {"namespaces": [` + runcNS + `, {"type": "user"}]}}`,
			func(b *Bundle) bool { return *b.UserNS == UserNS{} }},
		{"user namespace, a range", `{"linux": {"namespaces": [` + runcNS + `, {"type": "user"}], "uidMappings": [{"containerID": 0, "hostID": 1610612736, "size": 65536}], "gidMappings": [{"containerID": 0, "hostID": 1610612736, "size": 65536}]}}`,
			func(b *Bundle) bool { return *b.UserNS == UserNS{HostID: 1610612736} }},
		{"a user with groups", `{"process": {"user": {"uid": 1000, "gid": 100, "additionalGids": [10, 20]}, "capabilities": null}}`,
			func(b *Bundle) bool {
				return reflect.DeepEqual(b.Config.User, &container.User{UID: 1000, GID: 100, Groups: []uint32{10, 20}}) && b.Config.CapDrop == nil
			}},
		{"a bounding set beyond berth's default", `{"process": {"capabilities": {"bounding": ["CAP_SYS_TIME", "CAP_NET_ADMIN", "CAP_KILL"], "effective": ["CAP_SYS_TIME", "CAP_NET_ADMIN", "CAP_KILL"], "permitted": ["cap_sys_time", "NET_ADMIN", "CAP_KILL"], "ambient": null}}}`,
			func(b *Bundle) bool {
				return reflect.DeepEqual(b.Config.CapAdd, []string{"CAP_NET_ADMIN", "CAP_SYS_TIME"}) &&
					reflect.DeepEqual(b.Config.CapDrop, minus(container.DefaultCapabilities(true), []string{"CAP_KILL", "CAP_NET_ADMIN"}))
			}},
		{"binds and tmpfs", `{"mounts": [{"destination": "/data/", "type": "bind", "source": "rootfs/bin", "options": ["rbind", "ro", "rprivate"]}, {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m", "mode=1777", "nr_inodes=1k"]}, {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "ro"]}]}`,
			func(b *Bundle) bool {
				return reflect.DeepEqual(b.Config.Mounts, []container.Mount{
					{Type: "bind", Source: b.Dir + "/rootfs/bin", Target: "/data", ReadOnly: true},
					{Type: "tmpfs", Target: "/scratch", Mode: 0o1777, Options: "size=1m,nr_inodes=1k"},
				})
			}},
		{"a relative program", `{"process": {"args": ["./bin/sh", "-c", "x"], "cwd": "/"}}`,
			func(b *Bundle) bool { return reflect.DeepEqual(b.Config.Args, []string{"/bin/sh", "-c", "x"}) }},
		{"terminal false", `{"process": {"terminal": false}}`, func(b *Bundle) bool { return b.Config.Console == "passthrough" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Load(bundleDir(t, patched(t, tc.patch)))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(b) {
				t.Errorf("bundle: %+v", b.Config)
			}
		})
	}
}
