package spec

import (
	"errors"
	"strings"
	"testing"
)

// base is declared beside every case, so that machines have an image and a network.
const base = `apiVersion: berth/v1
kind: Image
name: img
directory: /srv/img
---
apiVersion: berth/v1
kind: Network
name: lan
subnet: 10.87.0.0/24
---
`

// m is a machine document named m on image img, with more fields appended.
func m(extra ...string) string {
	return "apiVersion: berth/v1\nkind: Machine\nname: m\nimage: img\n" + strings.Join(extra, "\n") + "\n"
}

// n is a network document with the given fields.
func n(fields ...string) string {
	return "---\napiVersion: berth/v1\nkind: Network\n" + strings.Join(fields, "\n") + "\n"
}

// img is an image document with the given fields.
func img(fields ...string) string {
	return "---\napiVersion: berth/v1\nkind: Image\n" + strings.Join(fields, "\n") + "\n"
}

// TestRules holds one good and at least one bad input for every rule of the
// language. want lists "field: part of the message", one per expected error, in
// the order the errors are reported; nil means the input is valid.
func TestRules(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want []string
	}{
		// Documents and decoding.
		{"minimal machine", m(), nil},
		{"empty documents and comments", "# nothing\n---\n---\n" + m() + "---\n", nil},
		{"no apiVersion", "kind: Machine\nname: x\n", []string{"apiVersion: missing"}},
		{"wrong apiVersion", "apiVersion: berth/v2\nkind: Machine\n", []string{`apiVersion: "berth/v2" is not a known apiVersion`}},
		{"no kind", "apiVersion: berth/v1\nname: x\n", []string{"kind: missing"}},
		{"misspelled kind", "apiVersion: berth/v1\nkind: machine\n", []string{`kind: "machine" is not a kind of document: use Machine, Network, Image, Profile; did you mean "Machine"?`}},
		{"document not a mapping", "- a\n- b\n", []string{"a document must be a mapping"}},
		{"unknown field with suggestion", m("hostnam: x"), []string{`hostnam: unknown field, did you mean "hostname"?`}},
		{"unknown field without suggestion", m("zzzzzz: x"), []string{"zzzzzz: unknown field (known: name, image"}},
		{"unknown nested field", m("resources: {memmax: 1G}"), []string{`resources.memmax: unknown field, did you mean "memoryMax"?`}},
		{"field in wrong case", m("Hostname: x"), []string{`Hostname: unknown field, did you mean "hostname"?`}},
		{"duplicate key", m("hostname: a", "hostname: b"), []string{"hostname: written twice in the same mapping (first at line 15)"}},
		{"duplicate nested key", m("resources: {cpus: 1, cpus: 2}"), []string{"resources.cpus: written twice"}},
		{"wrong type: mapping for string", m("hostname: {a: b}"), []string{"hostname: expected a string, got a mapping"}},
		{"wrong type: string for list", m("command: /bin/sh"), []string{"command: expected a list, got a string"}},
		{"wrong type: string for bool", m("boot: yes"), []string{`boot: expected true or false, got a string ("yes")`}},
		{"wrong type: string for int", m("resources: {pidsMax: many}"), []string{"resources.pidsMax: expected a whole number"}},
		{"wrong type: list for struct", m("resources: [1]"), []string{"resources: expected a mapping, got a list"}},
		{"null is unset", m("hostname: ~", "resources:"), nil},
		{"merge keys", m("resources:\n  <<: {cpus: 1}"), []string{"merge keys (<<) are not supported"}},
		{"aliases resolve", m("mounts: [&a {source: /a, target: /a}, *a]"), []string{"mounts[1].target: /a is already mounted by mounts[0]"}},
		{"anchor reuse", m("resources: &r {cpus: 1}", "restart: {policy: always}"), nil},
		{"invalid yaml", m("hostname: [a"), []string{"invalid YAML"}},

		// Names.
		{"name missing", "apiVersion: berth/v1\nkind: Machine\nimage: img\n", []string{"name: missing: every machine needs a name"}},
		{"name upper case", strings.Replace(m(), "name: m", "name: Web", 1), []string{`name: "Web" is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit; did you mean "web"?`}},
		{"name path", strings.Replace(m(), "name: m", "name: ../x", 1), []string{`name: "../x" is not a valid name`}},
		{"name dot", strings.Replace(m(), "name: m", "name: a.b", 1), []string{`name: "a.b" is not a valid name`}},
		{"name 63", strings.Replace(m(), "name: m", "name: "+strings.Repeat("a", 63), 1), nil},
		{"name 64", strings.Replace(m(), "name: m", "name: "+strings.Repeat("a", 64), 1), []string{"name: \"" + strings.Repeat("a", 64) + "\" is 64 characters long: at most 63 are allowed"}},
		{"name leading dash", strings.Replace(m(), "name: m", "name: -a", 1), []string{`name: "-a" is not a valid name`}},
		{"duplicate machine", m() + "---\n" + m(), []string{`name: Machine "m" is already defined at test.yaml:11`}},
		{"same name, other kind", m() + img("name: m", "directory: /x"), nil},

		// Image references and sources.
		{"image missing", "apiVersion: berth/v1\nkind: Machine\nname: m\n", []string{"image: missing"}},
		{"image undeclared", strings.Replace(m(), "image: img", "image: imgg", 1), []string{`image: no Image named "imgg" is declared; did you mean "img"?`}},
		{"image undeclared, far", strings.Replace(m(), "image: img", "image: debian", 1), []string{`image: no Image named "debian" is declared (declared: img)`}},
		{"image: no source", img("name: i2"), []string{"an image needs a source: directory, tar, debootstrap, registry, ociLayout, dockerArchive"}},
		{"image: registry and layout", img("name: i2", "registry: {ref: debian}", "ociLayout: {path: /srv/oci}"), []string{"ociLayout: an image has exactly one source, and registry is set too"}},
		{"image: registry", img("name: i2", "registry: {ref: docker.io/library/debian:bookworm, platform: linux/arm64/v8, authFile: /etc/berth/auth.json, insecure: false}"), nil},
		{"image: registry short ref", img("name: i2", "registry: {ref: debian}"), nil},
		{"image: registry pinned", img("name: i2", "registry: {ref: 'registry.example.org:5000/team/app:1.2@sha256:"+strings.Repeat("ab", 32)+"'}"), nil},
		{"image: registry no ref", img("name: i2", "registry: {platform: linux/amd64}"), []string{"registry.ref: missing: give the image's reference"}},
		{"image: registry empty ref", img("name: i2", "registry: {ref: ''}"), []string{"registry.ref: is empty"}},
		{"image: registry ref syntax", img("name: i2", "registry: {ref: 'Debian:Bookworm'}"), []string{`registry.ref: "Debian:Bookworm" is not an image reference: repository can only contain the characters`}},
		{"image: registry ref spaces", img("name: i2", "registry: {ref: 'debian bookworm'}"), []string{`registry.ref: "debian bookworm" is not an image reference: `}},
		{"image: registry short digest", img("name: i2", "registry: {ref: 'debian@sha256:abc'}"), []string{`registry.ref: "debian@sha256:abc" is not an image reference`}},
		{"image: registry scheme", img("name: i2", "registry: {ref: 'docker://debian:12'}"), []string{`registry.ref: "docker://debian:12": write the reference without a scheme, e.g. debian:12`}},
		{"image: registry platform", img("name: i2", "registry: {ref: debian, platform: amd64}"), []string{`registry.platform: "amd64" is not os/architecture[/variant]`}},
		{"image: registry platform alias", img("name: i2", "registry: {ref: debian, platform: linux/aarch64}"), []string{`registry.platform: "linux/aarch64": aarch64 is not an OCI architecture name; did you mean linux/arm64?`}},
		{"image: registry platform os", img("name: i2", "registry: {ref: debian, platform: windows/amd64}"), []string{`registry.platform: "windows/amd64": berth runs Linux images only`}},
		{"image: registry platform variant", img("name: i2", "registry: {ref: debian, platform: linux/arm/v9}"), []string{`registry.platform: "linux/arm/v9": arm's variants are v5, v6, v7, v8`}},
		{"image: registry platform no variants", img("name: i2", "registry: {ref: debian, platform: linux/s390x/v1}"), []string{`registry.platform: "linux/s390x/v1": s390x has no variants`}},
		{"image: registry auth file", img("name: i2", "registry: {ref: debian, authFile: auth.json}"), []string{`registry.authFile: "auth.json" is not an absolute path`}},
		{"image: registry insecure type", img("name: i2", "registry: {ref: debian, insecure: yes}"), []string{`registry.insecure: expected true or false`}},
		{"image: registry unknown field", img("name: i2", "registry: {ref: debian, tag: x}"), []string{`registry.tag: unknown field`}},
		{"image: oci layout", img("name: i2", "ociLayout: {path: /srv/oci/debian, ref: bookworm, platform: linux/amd64}"), nil},
		{"image: oci layout no path", img("name: i2", "ociLayout: {ref: latest}"), []string{"ociLayout.path: missing: give the absolute path of the layout directory"}},
		{"image: oci layout relative", img("name: i2", "ociLayout: {path: oci}"), []string{`ociLayout.path: "oci" is not an absolute path`}},
		{"image: oci layout ref", img("name: i2", "ociLayout: {path: /oci, ref: 'a b'}"), []string{`ociLayout.ref: "a b" is not a ref name of an OCI layout`}},
		{"image: oci layout full ref", img("name: i2", "ociLayout: {path: /oci, ref: 'docker.io/library/debian:12'}"), nil},
		{"image: docker archive", img("name: i2", "dockerArchive: {path: /srv/debian.tar, ref: 'debian:bookworm'}"), nil},
		{"image: docker archive no path", img("name: i2", "dockerArchive: {ref: 'debian:bookworm'}"), []string{"dockerArchive.path: missing"}},
		{"image: docker archive ref", img("name: i2", "dockerArchive: {path: /d.tar, ref: 'debian@sha256:"+strings.Repeat("ab", 32)+"'}"), []string{`dockerArchive.ref: "debian@sha256:` + strings.Repeat("ab", 32) + `" is not an image tag`}},
		{"image: docker archive platform", img("name: i2", "dockerArchive: {path: /d.tar, platform: linux/x86_64}"), []string{`dockerArchive.platform: "linux/x86_64": x86_64 is not an OCI architecture name; did you mean linux/amd64?`}},
		{"image: two sources", img("name: i2", "directory: /x", "debootstrap: {suite: bookworm}"), []string{"debootstrap: an image has exactly one source, and directory is set too"}},
		{"image: relative directory", img("name: i2", "directory: x"), []string{`directory: "x" is not an absolute path`}},
		{"image: directory /", img("name: i2", "directory: /"), []string{"directory: the host's own root cannot be an image"}},
		{"image: dotdot", img("name: i2", "directory: /srv/../x"), []string{`directory: "/srv/../x" contains . or .. elements: write it as "/x"`}},
		{"image: tar path", img("name: i2", "tar: {path: /x/root.tar.zst, sha256: "+strings.Repeat("ab", 32)+"}"), nil},
		{"image: tar url", img("name: i2", "tar: {url: 'https://example.org/r.tar.xz?x=1'}"), nil},
		{"image: tar both", img("name: i2", "tar: {path: /r.tar, url: 'http://h/r.tar'}"), []string{"tar.url: give either path or url, not both"}},
		{"image: tar neither", img("name: i2", "tar: {sha256: "+strings.Repeat("ab", 32)+"}"), []string{"tar: give the archive's path or url"}},
		{"image: tar ext", img("name: i2", "tar: {path: /r.zip}"), []string{`tar.path: "/r.zip" does not end in a known archive type`}},
		{"image: tar url scheme", img("name: i2", "tar: {url: 'ftp://h/r.tar'}"), []string{`tar.url: "ftp://h/r.tar" is not an http:// or https:// URL`}},
		{"image: tar sha", img("name: i2", "tar: {path: /r.tgz, sha256: abc}"), []string{`tar.sha256: "abc" is not a SHA-256`}},
		{"image: debootstrap", img("name: i2", "debootstrap: {suite: bookworm, mirror: 'http://deb.debian.org/debian', variant: minbase, packages: [systemd, libc6-dev, g++]}"), nil},
		{"image: debootstrap no suite", img("name: i2", "debootstrap: {variant: minbase}"), []string{"debootstrap.suite: missing"}},
		{"image: debootstrap variant", img("name: i2", "debootstrap: {suite: bookworm, variant: minbse}"), []string{`debootstrap.variant: "minbse" is not one of minbase, buildd, fakechroot, standard; did you mean "minbase"?`}},
		{"image: debootstrap mirror", img("name: i2", "debootstrap: {suite: bookworm, mirror: deb.debian.org}"), []string{`debootstrap.mirror: "deb.debian.org" is not an http://`}},
		{"image: debootstrap package", img("name: i2", "debootstrap: {suite: bookworm, packages: [Systemd, dbus, dbus]}"), []string{`debootstrap.packages[0]: "Systemd" is not a Debian package name`, "debootstrap.packages[2]: dbus is already listed at packages[1]"}},

		// Boot mode and application mode.
		{"command", m("command: [/bin/sh, -c, 'true']"), nil},
		{"command with boot false", m("command: [/bin/sh]", "boot: false"), nil},
		{"boot and command", m("boot: true", "command: [/bin/sh]"), []string{"boot: true, and command is set too"}},
		{"boot false without command", m("boot: false"), []string{"boot: false needs a command"}},
		{"empty command", m("command: []"), []string{"command: is empty"}},
		{"empty program", m("command: ['']"), []string{"command[0]: the program to run is empty"}},
		{"init", m("init: /sbin/init", "initArgs: [systemd.unit=rescue.target]"), nil},
		{"init relative", m("init: sbin/init"), []string{`init: "sbin/init" is not an absolute path`}},
		{"init with command", m("command: [/bin/sh]", "init: /sbin/init", "initArgs: [x]"), []string{"init: init is used only when the machine boots", "initArgs: initArgs are used only when the machine boots"}},
		{"workingDir", m("workingDir: srv"), []string{`workingDir: "srv" is not an absolute path`}},
		{"hostname", m("hostname: web.example.org"), nil},
		{"hostname bad", m("hostname: 'a b'"), []string{`hostname: "a b" is not a valid hostname`}},
		{"state", m("state: stopped"), nil},
		{"state bad", m("state: started"), []string{`state: "started" is not one of running, stopped`}},

		// Restart policy.
		{"restart", m("restart: {policy: always, maxRetries: 3, backoff: 2s, maxBackoff: 1m}"), nil},
		{"restart no", m("restart: {policy: no}"), nil},
		{"restart bad policy", m("restart: {policy: sometimes}"), []string{`restart.policy: "sometimes" is not one of no, on-failure, always`}},
		{"restart false", m("restart: {policy: false}"), []string{`restart.policy: "false" is not one of no, on-failure, always`}},
		{"restart negative retries", m("restart: {maxRetries: -1}"), []string{"restart.maxRetries: -1 is negative"}},
		{"restart zero backoff", m("restart: {backoff: 0s}"), []string{"restart.backoff: must be greater than 0"}},
		{"restart backoff order", m("restart: {backoff: 10s, maxBackoff: 5s}"), []string{"restart.maxBackoff: 5s is less than backoff (10s)"}},
		{"restart bad duration", m("restart: {backoff: 5 minutes}"), []string{`restart.backoff: "5 minutes" is not a duration`}},
		{"stopTimeout", m("stopTimeout: 90"), nil},
		{"stopTimeout zero", m("stopTimeout: 0s"), []string{"stopTimeout: must be greater than 0"}},
		{"stopTimeout negative", m("stopTimeout: -3s"), []string{`stopTimeout: "-3s" is negative`}},

		// Resources.
		{"resources", m("resources: {memoryMax: 1.5G, memoryHigh: 1G, cpus: 1.5, cpuWeight: 200, pidsMax: 100, ioWeight: 10000}"), nil},
		{"memory bytes", m("resources: {memoryMax: 1073741824}"), nil},
		{"memory bad size", m("resources: {memoryMax: 512X}"), []string{`resources.memoryMax: "512X" is not a size`}},
		{"memory zero", m("resources: {memoryMax: 0}"), []string{"resources.memoryMax: must be greater than 0"}},
		{"memory high above max", m("resources: {memoryMax: 1G, memoryHigh: 2G}"), []string{"resources.memoryHigh: 2G is above memoryMax (1G)"}},
		{"cpus zero", m("resources: {cpus: 0}"), []string{"resources.cpus: 0 must be greater than 0"}},
		{"cpus negative", m("resources: {cpus: -1}"), []string{"resources.cpus: -1 must be greater than 0"}},
		{"cpus string", m("resources: {cpus: two}"), []string{`resources.cpus: expected a number, got a string ("two")`}},
		{"cpuWeight low", m("resources: {cpuWeight: 0}"), []string{"resources.cpuWeight: 0 is out of range: a weight is from 1 to 10000"}},
		{"ioWeight high", m("resources: {ioWeight: 10001}"), []string{"resources.ioWeight: 10001 is out of range"}},
		// I/O limits and CPU placement.
		{"io limits", m("resources: {io: [{device: /dev/vda, readBandwidth: 10M, writeBandwidth: 1M, readIOPS: 1000, writeIOPS: 500}, {device: /dev/vdb1, writeIOPS: 10}]}"), nil},
		{"io no device", m("resources: {io: [{readBandwidth: 1M}]}"), []string{"resources.io[0].device: is required"}},
		{"io relative device", m("resources: {io: [{device: vda, readBandwidth: 1M}]}"), []string{`resources.io[0].device: "vda" is not a device node`}},
		{"io device outside dev", m("resources: {io: [{device: /dev/../etc/passwd, readBandwidth: 1M}]}"), []string{`resources.io[0].device: "/dev/../etc/passwd" is not a device node`}},
		{"io duplicate device", m("resources: {io: [{device: /dev/vda, readBandwidth: 1M}, {device: /dev/vda, writeIOPS: 5}]}"), []string{"resources.io[1].device: /dev/vda is already limited by resources.io[0]"}},
		{"io nothing limited", m("resources: {io: [{device: /dev/vda}]}"), []string{"resources.io[0]: limits nothing"}},
		{"io zero bandwidth", m("resources: {io: [{device: /dev/vda, writeBandwidth: 0, readIOPS: 5}]}"), []string{"resources.io[0].writeBandwidth: must be greater than 0"}},
		{"io negative iops", m("resources: {io: [{device: /dev/vda, readIOPS: -5}]}"), []string{"resources.io[0].readIOPS: must be greater than 0"}},
		{"io bad size", m("resources: {io: [{device: /dev/vda, readBandwidth: fast}]}"), []string{`resources.io[0].readBandwidth: "fast" is not a size`}},
		{"io unknown field", m("resources: {io: [{device: /dev/vda, readBps: 1M, readIOPS: 5}]}"), []string{`resources.io[0].readBps: unknown field`}},
		{"cpuset", m("resources: {cpuset: '0-1,3'}"), nil},
		{"cpuset number", m("resources: {cpuset: 1}"), nil},
		{"cpuset bad", m("resources: {cpuset: 'one'}"), []string{`resources.cpuset: "one" is not a CPU list item`}},
		{"cpuset reversed", m("resources: {cpuset: '3-1'}"), []string{"resources.cpuset: \"3-1\": a range goes from the lower CPU to the higher"}},
		{"cpuset empty", m("resources: {cpuset: ''}"), []string{"resources.cpuset: empty CPU list"}},
		{"pidsMax zero", m("resources: {pidsMax: 0}"), []string{"resources.pidsMax: 0 is too small"}},
		{"pidsMax below what berth needs", m("resources: {pidsMax: 16}"), []string{"resources.pidsMax: 16 is too small"}},

		// Machine network.
		{"network shorthand", m("network: lan"), nil},
		{"network none", m("network: none"), nil},
		{"network host", m("network: {name: host}"), nil},
		{"network undeclared", m("network: lann"), []string{`network: no Network named "lann" is declared; did you mean "lan"?`}},
		{"network undeclared long form", m("network: {name: internet}"), []string{`network.name: no Network named "internet" is declared (declared: lan)`}},
		{"network bad name", m("network: LAN"), []string{`network.name: "LAN" is not a valid name`}},
		{"address", m("network: {name: lan, address: 10.87.0.10}"), nil},
		{"address cidr", m("network: {name: lan, address: 10.87.0.10/24}"), nil},
		{"address bad", m("network: {name: lan, address: 10.87.0.300/24}"), []string{"network.address: 10.87.0.300 is not an IP address"}},
		{"address bad prefix", m("network: {name: lan, address: 10.87.0.3/33}"), []string{"network.address: 10.87.0.3/33: /33 is not a prefix length"}},
		{"address other prefix", m("network: {name: lan, address: 10.87.0.10/16}"), []string{`network.address: 10.87.0.10/16: the prefix length /16 differs from network "lan"'s subnet 10.87.0.0/24`}},
		{"address outside", m("network: {name: lan, address: 10.88.0.10}"), []string{"network.address: 10.88.0.10 is outside network lan's subnet 10.87.0.0/24"}},
		{"address network", m("network: {name: lan, address: 10.87.0.0}"), []string{"network.address: 10.87.0.0 is the network address of 10.87.0.0/24"}},
		{"address broadcast", m("network: {name: lan, address: 10.87.0.255}"), []string{"network.address: 10.87.0.255 is the broadcast address"}},
		{"address gateway", m("network: {name: lan, address: 10.87.0.1}"), []string{`network.address: 10.87.0.1 is the gateway of network "lan"`}},
		{"address ipv6 in address", m("network: {name: lan, address: 'fd00::1'}"), []string{"network.address: fd00::1 is not an IPv4 address"}},
		{"address twice", m("network: {name: lan, address: 10.87.0.10}") + "---\n" + strings.Replace(m("network: {name: lan, address: 10.87.0.10}"), "name: m", "name: m2", 1),
			[]string{`network.address: 10.87.0.10 is already the address of machine "m" (test.yaml:11)`}},
		{"address without network", m("network: {address: 10.87.0.10}"), []string{"network.address: needs a Network: the machine's network is none"}},
		{"ports with host network", m("network: {name: host, ports: [80]}"), []string{"network.ports: needs a Network: the machine's network is host"}},
		{"address6 without subnet6", m("network: {name: lan, address6: 'fd87::10'}"), []string{`network.address6: network "lan" has no subnet6`}},
		{"address6", m("network: {name: six, address: 10.90.0.5, address6: 'fd90::5'}") + n("name: six", "subnet: 10.90.0.0/24", "subnet6: 'fd90::/64'"), nil},
		{"address6 outside", m("network: {name: six, address6: 'fd91::5'}") + n("name: six", "subnet: 10.90.0.0/24", "subnet6: 'fd90::/64'"), []string{"network.address6: fd91::5 is outside network six's subnet6 fd90::/64"}},
		{"address6 v4", m("network: {name: lan, address6: 10.87.0.4}"), []string{"network.address6: 10.87.0.4 is not an IPv6 address"}},
		{"mac", m("network: {name: lan, mac: '02:00:0A:57:00:0a'}"), nil},
		{"mac bad", m("network: {name: lan, mac: 'zz:00:0a:57:00:0a'}"), []string{`network.mac: "zz:00:0a:57:00:0a" is not a MAC address`}},
		{"mac multicast", m("network: {name: lan, mac: '01:00:0a:57:00:0a'}"), []string{"network.mac: 01:00:0a:57:00:0a is a multicast address"}},
		{"mac twice", m("network: {name: lan, mac: '02:00:0a:57:00:0a'}") + "---\n" + strings.Replace(m("network: {name: lan, mac: '02:00:0A:57:00:0A'}"), "name: m", "name: m2", 1),
			[]string{`network.mac: 02:00:0a:57:00:0a is already the MAC of machine "m"`}},

		// Ports.
		{"ports short", m("network: {name: lan, ports: [80, '8080:80', '127.0.0.1:8081:80/tcp', '8082:80/udp', '[::1]:8083:80']}"), []string{"network.ports[4]: forwards from the IPv6 address ::1, but network \"lan\" has no subnet6"}},
		{"ports long", m("network: {name: lan, ports: [{hostPort: 8080, machinePort: 80, protocol: udp, hostAddress: 127.0.0.1}]}"), nil},
		{"port bad short", m("network: {name: lan, ports: ['80:80:80:80']}"), []string{`network.ports[0]: "80:80:80:80" is not a port forward (too many ':')`}},
		{"port bad protocol", m("network: {name: lan, ports: ['80/sctp']}"), []string{`network.ports[0]: "80/sctp" is not a port forward (protocol "sctp" is not tcp or udp)`}},
		{"port bad protocol long", m("network: {name: lan, ports: [{hostPort: 80, protocol: sctp}]}"), []string{`network.ports[0].protocol: "sctp" is not one of tcp, udp`}},
		{"port out of range", m("network: {name: lan, ports: [{hostPort: 0}, {hostPort: 80, machinePort: 65536}]}"), []string{"network.ports[0].hostPort: 0 is not a port number", "network.ports[1].machinePort: 65536 is not a port number"}},
		{"port missing", m("network: {name: lan, ports: [{machinePort: 80}]}"), []string{"network.ports[0]: hostPort is missing"}},
		{"port twice same machine", m("network: {name: lan, ports: ['8080:80', '8080:81']}"), []string{"network.ports[1]: host port 8080/tcp is already forwarded by network.ports[0]"}},
		{"port twice other protocol", m("network: {name: lan, ports: ['8080:80', '8080:80/udp']}"), nil},
		{"port twice other address", m("network: {name: lan, ports: ['127.0.0.1:8080:80', '127.0.0.2:8080:80']}"), nil},
		{"port twice wildcard", m("network: {name: lan, ports: ['127.0.0.1:8080:80', '8080:80']}"), []string{"network.ports[1]: host port 8080/tcp is already forwarded"}},
		{"port twice across machines", m("network: {name: lan, ports: [8080]}") + "---\n" + strings.Replace(m("network: {name: lan, ports: [8080]}"), "name: m", "name: m2", 1),
			[]string{`network.ports[0]: host port 8080/tcp is already forwarded to machine "m" (test.yaml:11)`}},

		// Mounts.
		{"mounts", m("mounts: [{source: /srv/www, target: /var/www, readOnly: true, create: true}, {type: tmpfs, target: /scratch, size: 64M, mode: '1777'}]"), nil},
		{"mount octal int", m("mounts: [{type: tmpfs, target: /scratch, mode: 0755}]"), nil},
		{"mount bad mode", m("mounts: [{type: tmpfs, target: /scratch, mode: '0999'}]"), []string{`mounts[0].mode: "0999" is not an octal mode`}},
		{"mount relative source", m("mounts: [{source: www, target: /var/www}]"), []string{`mounts[0].source: "www" is not an absolute path`}},
		{"mount relative target", m("mounts: [{source: /www, target: var/www}]"), []string{`mounts[0].target: "var/www" is not an absolute path`}},
		{"mount target dotdot", m("mounts: [{source: /www, target: /var/../../etc}]"), []string{`mounts[0].target: "/var/../../etc" contains . or .. elements`}},
		{"mount root", m("mounts: [{source: /www, target: /}]"), []string{"mounts[0].target: cannot mount over the machine's root /"}},
		{"mount root slashes", m("mounts: [{source: /www, target: //}]"), []string{"mounts[0].target: cannot mount over the machine's root /"}},
		{"mount proc", m("mounts: [{source: /www, target: /proc/sys}]"), []string{"mounts[0].target: /proc/sys is set up by berth"}},
		{"mount target twice", m("mounts: [{source: /a, target: /data}, {type: tmpfs, target: /data/}]"), []string{"mounts[1].target: /data is already mounted by mounts[0]"}},
		{"mount no type no source", m("mounts: [{target: /data}]"), []string{"mounts[0]: type is missing"}},
		{"mount bind without source", m("mounts: [{type: bind, target: /data}]"), []string{"mounts[0].source: missing"}},
		{"mount no target", m("mounts: [{source: /a}]"), []string{"mounts[0].target: missing"}},
		{"mount tmpfs with source", m("mounts: [{type: tmpfs, source: /a, target: /b, create: true}]"), []string{"mounts[0].source: a tmpfs has no source", "mounts[0].create: create applies to bind mounts only"}},
		{"mount bind with size", m("mounts: [{source: /a, target: /b, size: 1G, mode: '0700'}]"), []string{"mounts[0].size: size applies to tmpfs", "mounts[0].mode: mode applies to tmpfs"}},
		{"mount bad size", m("mounts: [{type: tmpfs, target: /b, size: lots}]"), []string{`mounts[0].size: "lots" is not a size`}},
		{"mount bad type", m("mounts: [{type: overlay, target: /b}]"), []string{`mounts[0].type: "overlay" is not one of bind, tmpfs`}},

		// Environment, capabilities, user namespace, root, resolv.conf.
		{"environment", m("environment: {LANG: C.UTF-8, DEBUG: true, N: 3, _x: ''}"), nil},
		{"environment bad name", m("environment: {'A-B': x}"), []string{`environment.A-B: "A-B" is not a variable name`}},
		{"environment reserved", m("environment: {NOTIFY_SOCKET: /x}"), []string{"environment.NOTIFY_SOCKET: NOTIFY_SOCKET is set by berth"}},
		{"environment not a map", m("environment: [A=b]"), []string{"environment: expected a mapping, got a list"}},
		{"capabilities", m("capabilities: {add: [NET_ADMIN, cap_sys_time], drop: [CAP_MKNOD]}"), nil},
		{"capability unknown", m("capabilities: {add: [NET_ADMINN]}"), []string{`capabilities.add[0]: "NET_ADMINN" is not a capability; did you mean "NET_ADMIN"?`}},
		{"capability add and drop", m("capabilities: {add: [sys_time], drop: [CAP_SYS_TIME]}"), []string{"capabilities.drop[0]: CAP_SYS_TIME is both added and dropped"}},
		{"privateUsers false", m("privateUsers: false"), nil},
		{"privateUsers true", m("privateUsers: true"), nil},
		{"privateUsers pick", m("privateUsers: pick"), nil},
		{"privateUsers pinned", m("privateUsers: 0x80000"), nil},
		{"privateUsers pinned decimal", m("privateUsers: 524288"), nil},
		{"privateUsers unaligned", m("privateUsers: 524289"), []string{"privateUsers: 524289 is not a multiple of 65536: a range starts on one (524288 or 589824)"}},
		{"privateUsers host range", m("privateUsers: 0"), []string{"privateUsers: 0 is the host's own users: write false"}},
		{"privateUsers past the end", m("privateUsers: 0xFFFF0000"), []string{"privateUsers: 4294901760: the range would pass the last UID"}},
		{"privateUsers negative", m("privateUsers: -65536"), []string{`privateUsers: "-65536" is not a user namespace setting`}},
		{"idmap on tmpfs", m("mounts: [{type: tmpfs, target: /t, idmap: false}]"), []string{"mounts[0].idmap: only a bind mount is idmapped"}},
		{"idmap on bind", m("mounts: [{source: /srv, target: /srv, idmap: false}]"), nil},
		{"security.idmap", m("security: {idmap: required}"), nil},
		{"privateUsers pinned twice", m("privateUsers: 0x80000") + "---\n" + strings.Replace(m("privateUsers: 524288"), "name: m", "name: m2", 1),
			[]string{`privateUsers: the UID range 524288-589823 is already machine "m"'s`}},
		{"privateUsers bad", m("privateUsers: identity"), []string{`privateUsers: "identity" is not a user namespace setting`}},
		{"root", m("root: {strategy: overlay, onImageChange: recreate}"), nil},
		{"root bad strategy", m("root: {strategy: zfs}"), []string{`root.strategy: "zfs" is not one of auto, overlay, btrfs, reflink, copy`}},
		{"root bad policy", m("root: {onImageChange: rebuild}"), []string{`root.onImageChange: "rebuild" is not one of keep, recreate`}},
		{"resolvConf network", m("network: dns", "resolvConf: network") + n("name: dns", "subnet: 10.91.0.0/24", "dns: [9.9.9.9]"), nil},
		{"resolvConf network with the resolver", m("network: lan", "resolvConf: network"), nil},
		{"resolvConf network without dns", m("network: quiet", "resolvConf: network") + n("name: quiet", "subnet: 10.91.0.0/24", "resolver: {enabled: false}"),
			[]string{`resolvConf: network "quiet" has its resolver off and lists no dns servers`}},
		{"resolvConf network without network", m("resolvConf: network"), []string{"resolvConf: network needs the machine to be on a Network"}},
		{"resolvConf bad", m("resolvConf: auto"), []string{`resolvConf: "auto" is not one of off, network, host`}},

		// Networks.
		{"network full", n("name: full", "bridge: brfull0", "subnet: 10.90.0.0/16", "gateway: 10.90.255.254", "subnet6: 'fd90::/64'", "gateway6: 'fd90::1'", "nat: false", "dns: [10.90.0.53, 'fd90::53']"), nil},
		{"network resolver", n("name: x", "subnet: 10.90.0.0/24", "resolver: {domain: lab.example.org}"), nil},
		{"network resolver off", n("name: x", "subnet: 10.90.0.0/24", "resolver: {enabled: false}"), nil},
		{"network resolver upper", n("name: x", "subnet: 10.90.0.0/24", "resolver: {domain: Lab.}"), []string{`resolver.domain: "Lab." is not a domain: use lowercase DNS labels (letters, digits, '-') joined by dots, without a trailing dot; did you mean "lab"?`}},
		{"network resolver empty", n("name: x", "subnet: 10.90.0.0/24", "resolver: {domain: ''}"), []string{"resolver.domain: is empty"}},
		{"network resolver arpa", n("name: x", "subnet: 10.90.0.0/24", "resolver: {domain: in-addr.arpa}"), []string{`resolver.domain: "in-addr.arpa" is in .arpa`}},
		{"network resolver local", n("name: x", "subnet: 10.90.0.0/24", "resolver: {domain: local}"), []string{`resolver.domain: "local" is in .local`}},
		{"network resolver long label", n("name: x", "subnet: 10.90.0.0/24", "resolver: {domain: "+strings.Repeat("a", 64)+".org}"), []string{"has a label longer than 63 characters"}},
		{"network resolver unknown", n("name: x", "subnet: 10.90.0.0/24", "resolver: {domian: x}"), []string{"resolver.domian"}},
		{"network reserved name", n("name: host", "subnet: 10.90.0.0/24"), []string{`name: "host" is reserved`}},
		{"network no subnet", n("name: x"), []string{"subnet: missing"}},
		{"network subnet host bits", n("name: x", "subnet: 10.90.0.1/24"), []string{"subnet: 10.90.0.1/24 has host bits set; did you mean 10.90.0.0/24?"}},
		{"network subnet no length", n("name: x", "subnet: 10.90.0.0"), []string{"subnet: 10.90.0.0 has no prefix length: write it in CIDR form, e.g. 10.90.0.0/24"}},
		{"network subnet too small", n("name: x", "subnet: 10.90.0.0/31"), []string{"subnet: 10.90.0.0/31 is too small"}},
		{"network subnet v6", n("name: x", "subnet: 'fd00::/64'"), []string{"subnet: fd00::/64 is not IPv4"}},
		{"network subnet garbage", n("name: x", "subnet: lan"), []string{"subnet: lan is not an IP address"}},
		{"network gateway outside", n("name: x", "subnet: 10.90.0.0/24", "gateway: 10.91.0.1"), []string{"gateway: 10.91.0.1 is outside subnet 10.90.0.0/24"}},
		{"network gateway broadcast", n("name: x", "subnet: 10.90.0.0/24", "gateway: 10.90.0.255"), []string{"gateway: 10.90.0.255 is the broadcast address"}},
		{"network gateway6", n("name: x", "subnet: 10.90.0.0/24", "subnet6: 'fd90::/64'", "gateway6: 'fd91::1'"), []string{"gateway6: fd91::1 is outside subnet6 fd90::/64"}},
		{"network gateway6 without subnet6", n("name: x", "subnet: 10.90.0.0/24", "gateway6: 'fd91::1'"), []string{"gateway6: needs subnet6"}},
		{"network subnet6 host bits", n("name: x", "subnet: 10.90.0.0/24", "subnet6: 'fd90::1/64'"), []string{"subnet6: fd90::1/64 has host bits set; did you mean fd90::/64?"}},
		{"network overlap", n("name: x", "subnet: 10.87.0.128/25"), []string{`subnet: 10.87.0.128/25 overlaps subnet 10.87.0.0/24 of network "lan" (test.yaml:6)`}},
		{"network bridge too long", n("name: x", "subnet: 10.90.0.0/24", "bridge: abcdefghijklmnop"), []string{`bridge: "abcdefghijklmnop" is 16 characters long: an interface name has at most 15`}},
		{"network bridge invalid", n("name: x", "subnet: 10.90.0.0/24", "bridge: 'a/b'"), []string{`bridge: "a/b" is not a valid interface name`}},
		{"network bridge clash", n("name: x", "subnet: 10.90.0.0/24", "bridge: br-lan"), []string{`bridge: bridge br-lan is also network "lan"'s (test.yaml:6)`}},
		{"network long name", n("name: a-very-long-network-name", "subnet: 10.90.0.0/24"), nil},
		{"network nat string", n("name: x", "subnet: 10.90.0.0/24", "nat: on"), []string{`nat: expected true or false, got a string ("on")`}},
		{"network dns bad", n("name: x", "subnet: 10.90.0.0/24", "dns: [dns.google]"), []string{"dns[0]: dns.google is not an IP address"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			set, err := Parse("test.yaml", []byte(base+c.in))
			var got []string
			if err != nil {
				var list ErrorList
				if !errors.As(err, &list) {
					t.Fatalf("error is %T, not an ErrorList: %v", err, err)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("errors.Is(err, ErrInvalid) is false")
				}
				if set != nil {
					t.Errorf("a set was returned with errors")
				}
				for _, e := range list {
					if e.File != "test.yaml" {
						t.Errorf("error without the file name: %v", e)
					}
					if e.Line == 0 {
						t.Errorf("error without a line: %v", e)
					}
					got = append(got, strings.TrimPrefix(e.Error(), "test.yaml:"))
				}
			} else if set == nil {
				t.Fatal("no set and no error")
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(got), len(c.want), strings.Join(got, "\n"))
			}
			for i, w := range c.want {
				// Strip "line:col: " to compare the field and message.
				g := got[i]
				for range 2 {
					if j := strings.IndexByte(g, ':'); j >= 0 && j < 5 && strings.Trim(g[:j], "0123456789") == "" {
						g = g[j+1:]
					}
				}
				g = strings.TrimSpace(g)
				if !strings.Contains(g, w) {
					t.Errorf("error %d:\n got: %s\nwant: %s", i, g, w)
				}
			}
		})
	}
}
