package spec

import (
	"net/netip"
	"strconv"
)

// APIVersion is the only apiVersion the language has so far. A document with another
// version is rejected, so a later berth/v2 can change meanings without guessing.
const APIVersion = "berth/v1"

// The kinds of documents.
const (
	KindMachine = "Machine"
	KindNetwork = "Network"
	KindImage   = "Image"
)

// Source is where a document was read from. It is not part of a definition's hash:
// moving a machine to another file is not a change.
type Source struct {
	File string `json:"file"`
	Line int    `json:"line"`
	Col  int    `json:"col"`
}

// Machine is a full-OS system container (or, with Command, an application-mode one).
//
// Field tags: `json` names the field in YAML, JSON and the hash; `doc` is the
// description in `berth schema` and docs/definitions.md; `enum` lists the allowed
// values, checked by the decoder and published in the schema (one table, so the two
// cannot drift).
type Machine struct {
	Source Source `json:"-"`

	Name     string   `json:"name" doc:"Machine name: a DNS label (lowercase letters, digits, '-'), at most 63 characters. Names the root directory, the scope machine-NAME.scope and the host veth." required:"true" format:"name"`
	Image    string   `json:"image" doc:"Name of the Image document the machine's root is made from (once; the root then persists)." required:"true" format:"name"`
	Profiles []string `json:"profiles,omitempty" doc:"Profile documents whose fields the machine takes, applied in order, the machine's own fields last: mappings merge key by key, lists and single values replace. See Profiles in docs/definitions.md."`
	State    State    `json:"state,omitempty" enum:"running,stopped" doc:"Desired state. Default running."`
	Boot     bool     `json:"boot,omitempty" doc:"Run the guest's init as PID 1 (like systemd-nspawn -b). Default true unless command is set."`
	Command  []string `json:"command,omitempty" doc:"Application mode: run this argv as PID 1 instead of booting init (like systemd-nspawn without -b)."`
	Init     string   `json:"init,omitempty" doc:"Absolute path of the init to boot. Default: the first of /usr/lib/systemd/systemd, /lib/systemd/systemd, /sbin/init that exists in the root." format:"abspath"`
	InitArgs []string `json:"initArgs,omitempty" doc:"Extra arguments for init in boot mode (for example systemd.unit=rescue.target)."`
	WorkDir  string   `json:"workingDir,omitempty" doc:"Absolute working directory of the command in application mode. Default /." format:"abspath"`
	Hostname string   `json:"hostname,omitempty" doc:"Hostname inside the machine. Default: the machine name."`

	Restart          Restart           `json:"restart" doc:"What to do when the machine stops without being asked to."`
	Resources        Resources         `json:"resources" doc:"Resource limits, applied to the machine's cgroup and changeable while it runs."`
	Network          MachineNetwork    `json:"network" doc:"Network attachment: the name of a Network document, none (loopback only, the default) or host (share the host's network). A string is short for {name: STRING}."`
	Mounts           []Mount           `json:"mounts,omitempty" doc:"Bind mounts from the host and tmpfs mounts."`
	Environment      map[string]string `json:"environment,omitempty" doc:"Environment variables of init (boot mode) or of the command."`
	Capabilities     Capabilities      `json:"capabilities,omitzero" doc:"Capabilities added to or dropped from the default bounding set (systemd-nspawn's)."`
	SystemCallFilter []string          `json:"systemCallFilter,omitempty" doc:"Changes to berth's system call allow-list, like systemd-nspawn's SystemCallFilter=: a syscall name or @group allows it, ~NAME or ~@group refuses it (with EPERM), applied in order. Adding a capability already brings back the calls that belong to it (@clock with CAP_SYS_TIME, …). See docs/runtime.md for the list and the groups."`
	Security         Security          `json:"security,omitzero" doc:"What a machine needs from the kernel to start: berth refuses to start it without a system call filter or a device fence unless a field here says optional."`
	PrivateUsers     PrivateUsers      `json:"privateUsers,omitempty" doc:"User namespace: pick (true, the default) gives the machine a private range of 65536 UIDs and GIDs, like systemd-nspawn -U: root in the machine is an unprivileged user on the host, and its root is idmapped (never chowned). A number pins the range's first UID (a multiple of 65536). false: the machine's root is the host's root, like systemd-nspawn without -U."`
	StopTimeout      Duration          `json:"stopTimeout,omitempty" doc:"How long a clean poweroff may take before every process of the machine is killed. Default 30s."`
	Root             Root              `json:"root" doc:"How the machine's persistent root is made from its image."`
	// Readiness and health (spec/health.go).
	Readiness   Readiness    `json:"readiness,omitzero" doc:"When an application-mode machine counts as running: none (once its command is exec'd, the default) or notify (once it sends READY=1 on $NOTIFY_SOCKET). A string is short for {type: STRING}."`
	HealthCheck *HealthCheck `json:"healthCheck,omitempty" doc:"A command berth's supervisor runs inside the running machine every interval (application or boot mode): berth list shows running (unhealthy) after retries failures in a row, and restart.onUnhealthy restarts it then."`

	ResolvConf ResolvConf `json:"resolvConf,omitempty" enum:"off,network,host" doc:"Whether berth writes the guest's /etc/resolv.conf: off (leave it alone), network (the Network's resolver on its gateway, or with the resolver off its dns servers), host (a copy of the host's). Default: network when the Network has its resolver on or lists dns servers, host for other Networks and for host networking, off for none. Takes effect at the next start."`

	// Origins is where each field was written (a path: resources,
	// resources.memoryMax), in the machine's document or a profile's; a field
	// missing here has its default. Not part of the definition or its hash.
	Origins map[string]Origin `json:"-"`

	// Copies makes this document a template; Template and Copy are set on
	// each machine made from one (not part of the hash: a copy's name is).
	Copies   int    `json:"copies,omitempty" doc:"Make this document a template of N machines, NAME-1 to NAME-N (1 to 1000), instead of one machine NAME: each copy has its own name, hostname, address from the network's pool and user range, and a change to the template changes every copy. Lowering it stops the copies beyond N (and, with berth apply --prune, removes their roots; an ephemeral copy leaves nothing). A template cannot pin what only one machine may have: hostname, network.address, address6, mac, port forwards, a pinned privateUsers range."`
	Template string `json:"-"`
	Copy     int    `json:"-"`

	// Provisioning (spec/provision.go).
	Credentials map[string]Credential `json:"credentials,omitempty" doc:"Credentials for the guest, by name, as systemd-nspawn's --set-credential/--load-credential: files in a read-only ramfs at /run/host/credentials that $CREDENTIALS_DIRECTORY names for PID 1 (init in boot mode, the command in application mode). systemd guests import them as system credentials (passwd.hashed-password.root, ssh.authorized_keys.root, firstboot.locale, login.motd…; see docs/definitions.md for which systemd reads which). Read at each start; values never appear in clear in status, plan or events."`
	Files       []ProvisionFile       `json:"files,omitempty" doc:"Files written into the machine's root before its first boot only (like cloud-init's write_files): a later change to this list applies only to a new root."`
}

// State is a machine's desired state.
type State string

const (
	StateRunning State = "running"
	StateStopped State = "stopped"
)

// Restart is the restart policy: how berthd reacts when a machine exits on its own.
type Restart struct {
	Policy     RestartPolicy `json:"policy,omitempty" enum:"no,on-failure,always" doc:"no: leave it stopped; on-failure: restart after a non-zero exit or a signal (default); always: restart after any exit, including a poweroff from inside."`
	MaxRetries int           `json:"maxRetries,omitempty" doc:"Give up after this many restarts in a row without a successful run; 0 (default) retries forever with back-off."`
	Backoff    Duration      `json:"backoff,omitempty" doc:"Delay before the first restart, doubled after each further failure. Default 1s."`
	MaxBackoff Duration      `json:"maxBackoff,omitempty" doc:"Upper bound of the delay between restarts. Default 5m."`
	// OnUnhealthy: see spec/health.go.
	OnUnhealthy bool `json:"onUnhealthy,omitempty" doc:"Kill the machine once its healthCheck makes it unhealthy; the exit (reason unhealthy) counts as a failure, so policy on-failure or always restarts it with the usual back-off. Needs a healthCheck. Default false: an unhealthy machine is only reported."`
}

// RestartPolicy says when a machine that exited is started again.
type RestartPolicy string

const (
	RestartNo        RestartPolicy = "no"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartAlways    RestartPolicy = "always"
)

// Resources are cgroup limits. A zero value means "no limit" / the system default.
type Resources struct {
	MemoryMax  Size    `json:"memoryMax,omitempty" doc:"Hard memory limit (MemoryMax=, memory.max), for example 512M or 2G."`
	MemoryHigh Size    `json:"memoryHigh,omitempty" doc:"Memory throttling threshold (MemoryHigh=, memory.high); must not exceed memoryMax."`
	CPUs       float64 `json:"cpus,omitempty" doc:"CPU time as a number of CPUs (1.5 = 150% CPUQuota=). Must be greater than 0."`
	CPUWeight  int     `json:"cpuWeight,omitempty" doc:"Relative CPU share (CPUWeight=), 1 to 10000; the system default is 100."`
	PidsMax    int     `json:"pidsMax,omitempty" doc:"Maximum number of tasks (TasksMax=, pids.max) of the machine, berth's supervisor included (about 10 tasks). Default 16384 (as systemd-nspawn@.service), so a fork bomb stops inside the machine; at least 32, at most 4194304."`
	IOWeight   int     `json:"ioWeight,omitempty" doc:"Relative block I/O share (IOWeight=), 1 to 10000; the system default is 100."`
	// I/O limits and CPU placement (issue 16, item 6).
	IO     []IOLimit `json:"io,omitempty" doc:"Bandwidth and IOPS limits per block device (IOReadBandwidthMax= etc., io.max or blkio.throttle.*), changed live."`
	CPUSet string    `json:"cpuset,omitempty" doc:"CPUs the machine may run on (AllowedCPUs=, cpuset.cpus), as the kernel lists them: 0-1 or 0,2-3. Every CPU must be online when the machine starts or changes. Changed live."`
}

// IOLimit limits a machine's I/O on one block device of the host. A zero field
// means no limit of that kind.
type IOLimit struct {
	Device         string `json:"device" required:"true" doc:"Block device node on the host, for example /dev/vda; a partition (/dev/vda1) limits its whole disk, as the kernel throttles disks. Resolved to its major:minor when the machine starts or changes; a missing device is a start error."`
	ReadBandwidth  Size   `json:"readBandwidth,omitempty" doc:"Bytes per second read from the device (IOReadBandwidthMax=, rbps), for example 10M."`
	WriteBandwidth Size   `json:"writeBandwidth,omitempty" doc:"Bytes per second written to the device (IOWriteBandwidthMax=, wbps), for example 1M."`
	ReadIOPS       int    `json:"readIOPS,omitempty" doc:"Read operations per second (IOReadIOPSMax=, riops)."`
	WriteIOPS      int    `json:"writeIOPS,omitempty" doc:"Write operations per second (IOWriteIOPSMax=, wiops)."`
}

// MachineNetwork attaches a machine to a network.
type MachineNetwork struct {
	Name         string       `json:"name,omitempty" doc:"A Network document's name, none (a private network namespace with only loopback; the default) or host (the host's network namespace)."`
	Address      netip.Prefix `json:"address,omitzero" doc:"Static IPv4 address, with or without the subnet's prefix length (10.87.0.10 or 10.87.0.10/24). Default: automatic, leased from the subnet and kept across restarts."`
	Address6     netip.Prefix `json:"address6,omitzero" doc:"Static IPv6 address when the Network has subnet6. Default: automatic."`
	MAC          string       `json:"mac,omitempty" doc:"MAC address of host0 (unicast, for example 02:42:0a:57:00:0a). Default: derived from the machine name, stable across restarts."`
	Ports        []Port       `json:"ports,omitempty" doc:"Port forwards from the host into the machine. A string is short for a port: [HOSTADDRESS:]HOSTPORT[:MACHINEPORT][/PROTOCOL], e.g. 8080:80 or 127.0.0.1:8080:80/tcp or [::1]:53:53/udp."`
	AntiSpoofing *bool        `json:"antiSpoofing,omitempty" doc:"Frames from the machine must carry its own MAC and IP addresses (and its link-local one), ARP and neighbour discovery only for them, and no router advertisements or DHCP server replies. Default true; false for a machine that routes or bridges other addresses."`
}

// Special values of MachineNetwork.Name.
const (
	NetworkNone = "none"
	NetworkHost = "host"
)

// Guarded reports whether the machine's frames are checked against its own
// addresses (antiSpoofing, on unless set false).
func (n *MachineNetwork) Guarded() bool { return n.AntiSpoofing == nil || *n.AntiSpoofing }

// Private reports whether the machine is attached to a declared Network (rather than
// none or host).
func (n *MachineNetwork) Private() bool {
	return n.Name != "" && n.Name != NetworkNone && n.Name != NetworkHost
}

// Port is one port forward: traffic to the host's HostAddress:HostPort goes to the
// machine's MachinePort.
type Port struct {
	HostPort    int        `json:"hostPort" doc:"Port on the host, 1 to 65535." required:"true"`
	MachinePort int        `json:"machinePort,omitempty" doc:"Port in the machine. Default: the same as hostPort."`
	Protocol    Protocol   `json:"protocol,omitempty" enum:"tcp,udp" doc:"tcp (default) or udp."`
	HostAddress netip.Addr `json:"hostAddress,omitzero" doc:"Host address to forward from (IPv4 or IPv6, for example 127.0.0.1 or ::1). Default: every address of the host."`
}

// Protocol is a transport protocol of a port forward.
type Protocol string

const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// Mount is a bind mount from the host or a tmpfs.
type Mount struct {
	Type     MountType `json:"type,omitempty" enum:"bind,tmpfs" doc:"bind or tmpfs. Default: bind when source is set."`
	Source   string    `json:"source,omitempty" doc:"bind: absolute path on the host." format:"abspath"`
	Target   string    `json:"target" doc:"Absolute path in the machine (not /)." required:"true" format:"abspath"`
	ReadOnly bool      `json:"readOnly,omitempty" doc:"Mount read-only. Default false."`
	Create   bool      `json:"create,omitempty" doc:"bind: create the source directory (0755, root) when it does not exist. Default false: a missing source is an error when the machine starts."`
	Size     Size      `json:"size,omitempty" doc:"tmpfs: size limit, for example 64M. Default: the kernel's (half of RAM)."`
	Mode     FileMode  `json:"mode,omitempty" doc:"tmpfs: octal permissions of the mount's root, as a string (\"1777\"). Default 0755."`
	Idmap    *bool     `json:"idmap,omitempty" doc:"bind, in a machine with private users: true (default) shows the host's owners inside unchanged (an idmapped bind, as systemd-nspawn's :idmap); false shows the unmapped view, where files of host users outside the machine's range belong to nobody."`
}

// Idmapped reports whether a bind mount is idmapped into the machine's range
// (only meaningful with private users).
func (m *Mount) Idmapped() bool { return m.Type == MountBind && (m.Idmap == nil || *m.Idmap) }

// MountType is the kind of a mount.
type MountType string

const (
	MountBind  MountType = "bind"
	MountTmpfs MountType = "tmpfs"
)

// Capabilities adjust the machine's capability bounding set. Names are canonical
// after decoding: upper case with the CAP_ prefix (CAP_NET_ADMIN).
type Capabilities struct {
	Add  []string `json:"add,omitempty" doc:"Capabilities to keep beyond the default set, e.g. NET_ADMIN or CAP_SYS_TIME."`
	Drop []string `json:"drop,omitempty" doc:"Capabilities to remove from the default set."`
}

// Security says which of berth's isolation layers a machine may start
// without when the kernel cannot provide them. Nothing here weakens a layer the
// kernel does provide.
type Security struct {
	Seccomp     Requirement `json:"seccomp,omitempty" enum:"required,optional" doc:"required (default): refuse to start where the kernel has no seccomp filters; optional: start without a system call filter there (berth status says so)."`
	DeviceFence Requirement `json:"deviceFence,omitempty" enum:"required,optional" doc:"required (default): refuse to start where no device policy can be placed (neither the v1 device controller nor BPF device programs); optional: start without one there (berth status says so)."`
	Idmap       Requirement `json:"idmap,omitempty" enum:"required,optional" doc:"With private users: optional (default): where the kernel or the root's filesystem cannot idmap, shift the root's owners into the machine's range once instead (recorded, berth status says so); required: refuse to start there."`
}

// Requirement says whether a machine may start without an isolation layer.
type Requirement string

const (
	Required Requirement = "required"
	Optional Requirement = "optional"
)

// PrivateUsers is the user namespace setting: "pick", "off", or the decimal
// first UID of a pinned range.
type PrivateUsers string

const (
	// PrivateUsersOff runs the machine in the host's user namespace.
	PrivateUsersOff PrivateUsers = "off"
	// PrivateUsersPick gives the machine a private range of 65536 UIDs/GIDs.
	PrivateUsersPick PrivateUsers = "pick"
)

// UserRangeSize is the number of UIDs (and GIDs) of a machine's range.
const UserRangeSize = 65536

// Private reports whether the machine runs in a user namespace of its own.
func (p PrivateUsers) Private() bool { return p != PrivateUsersOff && p != "" }

// Pinned returns the first UID of a pinned range, and whether there is one.
func (p PrivateUsers) Pinned() (uint32, bool) {
	if !p.Private() || p == PrivateUsersPick {
		return 0, false
	}
	n, err := strconv.ParseUint(string(p), 10, 32)
	return uint32(n), err == nil
}

// Root says how a machine's persistent root filesystem is made and kept.
type Root struct {
	Strategy      RootStrategy `json:"strategy,omitempty" enum:"auto,overlay,btrfs,reflink,copy" doc:"How the root is made from the image: auto (default: the cheapest the filesystem allows), overlay (overlayfs over the read-only image), btrfs (snapshot), reflink (copy-on-write copy), copy (plain copy)."`
	OnImageChange ImageChange  `json:"onImageChange,omitempty" enum:"keep,recreate" doc:"What happens when the image changes under an existing root: keep (default: the root is data; berth reports that the machine needs recreating) or recreate (the root is thrown away and made anew from the new image)."`

	Ephemeral     bool `json:"ephemeral,omitempty" doc:"Run the machine on a throw-away layer over its image: every boot (a reboot too) starts from the image as it is, nothing the machine writes is kept after it stops, and no root is made in the state directory (like systemd-nspawn --ephemeral, without its copy of the tree: starting costs the same whatever the image's size). The layer is a tmpfs, counted in the machine's memory. Default false."`
	EphemeralSize Size `json:"ephemeralSize,omitempty" doc:"With ephemeral: the most the machine can write (the tmpfs's size), for example 256M. Default 1G."`
}

// DefaultEphemeralSize caps the throw-away layer of an ephemeral machine.
const DefaultEphemeralSize = Size(1 << 30)

// RootStrategy is how a machine root is cloned from its image.
type RootStrategy string

const (
	RootAuto    RootStrategy = "auto"
	RootOverlay RootStrategy = "overlay"
	RootBtrfs   RootStrategy = "btrfs"
	RootReflink RootStrategy = "reflink"
	RootCopy    RootStrategy = "copy"
)

// ImageChange is the policy for a root whose image has changed.
type ImageChange string

const (
	ImageChangeKeep     ImageChange = "keep"
	ImageChangeRecreate ImageChange = "recreate"
)

// ResolvConf is who manages the guest's /etc/resolv.conf.
type ResolvConf string

const (
	ResolvConfOff     ResolvConf = "off"
	ResolvConfNetwork ResolvConf = "network"
	ResolvConfHost    ResolvConf = "host"
)

// Network is a bridge on the host with an IPv4 (and optionally IPv6) subnet that
// machines attach to.
type Network struct {
	Source Source `json:"-"`

	Name     string       `json:"name" doc:"Network name: a DNS label, at most 63 characters; none and host are reserved." required:"true" format:"name"`
	Bridge   string       `json:"bridge,omitempty" doc:"Bridge interface name (at most 15 characters). Default br-NAME, shortened with a hash when longer than 15." format:"ifname"`
	Subnet   netip.Prefix `json:"subnet" doc:"IPv4 subnet in CIDR form with the host bits zero, /30 or larger, e.g. 10.87.0.0/24." required:"true"`
	Gateway  netip.Addr   `json:"gateway,omitzero" doc:"The bridge's IPv4 address and the machines' default route. Default: the first host of the subnet."`
	Subnet6  netip.Prefix `json:"subnet6,omitzero" doc:"Optional IPv6 subnet, e.g. fd87::/64."`
	Gateway6 netip.Addr   `json:"gateway6,omitzero" doc:"The bridge's IPv6 address. Default: the first host of subnet6."`
	NAT      *bool        `json:"nat,omitempty" doc:"Masquerade the machines' traffic to the outside. Default true."`
	DNS      []netip.Addr `json:"dns,omitempty" doc:"Upstream DNS servers: where the network's resolver forwards the names it does not know (default: the host's resolvers), or, with the resolver off, the servers written to the machines' /etc/resolv.conf (see the machine's resolvConf)."`
	Resolver *Resolver    `json:"resolver,omitempty" doc:"berth's DNS server on the gateway address, which answers for the network's machines by name. Default: on, domain berth."`
}

// Resolver is berth's DNS server on a network's gateway: it answers A, AAAA
// and PTR queries for the machines attached to the network (NAME and
// NAME.DOMAIN) and forwards every other query.
type Resolver struct {
	Enabled *bool  `json:"enabled,omitempty" doc:"Run the resolver. Default true; false leaves the machines with the dns servers (or the host's)."`
	Domain  string `json:"domain,omitempty" doc:"The domain of the machines' names: web is also web.DOMAIN, and the machines' resolv.conf searches it. Lowercase DNS labels joined by dots. Default berth." format:"domain"`
}

// ResolverOn reports whether the network runs berth's resolver (the default).
func (n *Network) ResolverOn() bool {
	return n.Resolver == nil || n.Resolver.Enabled == nil || *n.Resolver.Enabled
}

// DefaultDomain is the domain of the machines' names when a network names none.
const DefaultDomain = "berth"

// Masquerade reports whether NAT is on (the default when NAT is unset).
func (n *Network) Masquerade() bool { return n.NAT == nil || *n.NAT }

// Image is a named, immutable root filesystem that machine roots are made from. It
// has exactly one source: Directory, Tar, Debootstrap (one tree), or Registry,
// OCILayout, DockerArchive (an OCI image: a stack of layers, each stored once).
type Image struct {
	Source Source `json:"-"`

	Name          string               `json:"name" doc:"Image name: a DNS label, at most 63 characters." required:"true" format:"name"`
	Directory     string               `json:"directory,omitempty" doc:"Source: an existing root filesystem tree on the host, copied into the image store (absolute path)." format:"abspath"`
	Tar           *TarSource           `json:"tar,omitempty" doc:"Source: a tar archive of a root filesystem (.tar, .tar.gz, .tgz, .tar.xz, .tar.zst), from a path or an http(s) URL."`
	Debootstrap   *Debootstrap         `json:"debootstrap,omitempty" doc:"Source: a Debian (or derivative) tree built with debootstrap."`
	Registry      *RegistrySource      `json:"registry,omitempty" doc:"Source: an OCI image in a registry (Docker Hub, ghcr.io, quay.io, one of your own), pulled layer by layer; a layer another image has is stored once."`
	OCILayout     *OCILayoutSource     `json:"ociLayout,omitempty" doc:"Source: an OCI image in an OCI image layout directory, as skopeo copy … oci:DIR:TAG, umoci or buildah write it."`
	DockerArchive *DockerArchiveSource `json:"dockerArchive,omitempty" doc:"Source: an OCI image in a docker save archive (or podman save, skopeo copy … docker-archive:FILE)."`
}

// TarSource is a tar archive; exactly one of Path and URL is set.
type TarSource struct {
	Path   string `json:"path,omitempty" doc:"Absolute path of the archive on the host." format:"abspath"`
	URL    string `json:"url,omitempty" doc:"http:// or https:// URL of the archive."`
	SHA256 string `json:"sha256,omitempty" doc:"Expected SHA-256 of the archive (64 hex digits); the import fails when it differs. Recommended for URLs."`
}

// Debootstrap is a debootstrap invocation: debootstrap --variant=VARIANT
// --include=PACKAGES SUITE TARGET MIRROR.
type Debootstrap struct {
	Suite    string   `json:"suite" doc:"Release codename or suite, e.g. bookworm." required:"true"`
	Mirror   string   `json:"mirror,omitempty" doc:"Archive URL. Default http://deb.debian.org/debian."`
	Variant  string   `json:"variant,omitempty" enum:"minbase,buildd,fakechroot,standard" doc:"debootstrap --variant. Default minbase; standard means debootstrap's default set."`
	Packages []string `json:"packages,omitempty" doc:"Extra packages (--include), e.g. systemd, dbus, iproute2."`
}

// RegistrySource is an image in an OCI distribution registry.
type RegistrySource struct {
	Ref      string `json:"ref" doc:"Image reference: [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. docker.io/library/debian:bookworm (without a registry Docker Hub's, without a tag or digest :latest). Pin the digest (REPOSITORY@sha256:…) so every host and every rebuild get the same image: a tag can move, and berth plan says so." required:"true"`
	Platform string `json:"platform,omitempty" doc:"os/architecture[/variant] of the image, e.g. linux/arm64 or linux/arm/v7: the one taken from a multi-platform index, and what a single image must be for. Default: the host's."`
	AuthFile string `json:"authFile,omitempty" doc:"Absolute path of a credentials file (containers-auth.json as podman login writes it, or a docker config.json), asked before the usual places: ~/.docker/config.json, $DOCKER_CONFIG, $REGISTRY_AUTH_FILE, containers/auth.json." format:"abspath"`
	Insecure bool   `json:"insecure,omitempty" doc:"Allow plain HTTP, and HTTPS with a certificate that is not verified. Default false: verified HTTPS only, on loopback and private networks too."`
}

// OCILayoutSource is an image in an OCI image layout directory.
type OCILayoutSource struct {
	Path     string `json:"path" doc:"Absolute path of the layout: the directory with index.json, oci-layout and blobs/." required:"true" format:"abspath"`
	Ref      string `json:"ref,omitempty" doc:"The image's name in the layout (its org.opencontainers.image.ref.name annotation: the TAG of skopeo's oci:DIR:TAG). Default: the layout's only image."`
	Platform string `json:"platform,omitempty" doc:"os/architecture[/variant] of the image, taken from a multi-platform index and checked on a single image. Default: the host's."`
}

// DockerArchiveSource is an image in a docker save archive.
type DockerArchiveSource struct {
	Path     string `json:"path" doc:"Absolute path of the archive (uncompressed: decompress a .tar.gz first)." required:"true" format:"abspath"`
	Ref      string `json:"ref,omitempty" doc:"The image's tag in the archive, e.g. debian:bookworm. Default: the archive's only image."`
	Platform string `json:"platform,omitempty" doc:"os/architecture[/variant] the image must be for. Default: the host's."`
}

// Set is every definition loaded in one run, each kind sorted by name.
type Set struct {
	Machines []*Machine `json:"machines"`
	Networks []*Network `json:"networks"`
	Images   []*Image   `json:"images"`
	Profiles []*Profile `json:"profiles,omitempty"`
}

// Machine returns the machine named name, or nil.
func (s *Set) Machine(name string) *Machine {
	return find(s.Machines, name, func(m *Machine) string { return m.Name })
}

// Network returns the network named name, or nil.
func (s *Set) Network(name string) *Network {
	return find(s.Networks, name, func(n *Network) string { return n.Name })
}

// Image returns the image named name, or nil.
func (s *Set) Image(name string) *Image {
	return find(s.Images, name, func(i *Image) string { return i.Name })
}

// find is a binary search over a slice sorted by name.
func find[T any](list []*T, name string, key func(*T) string) *T {
	lo, hi := 0, len(list)
	for lo < hi {
		mid := (lo + hi) / 2
		if key(list[mid]) < name {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(list) && key(list[lo]) == name {
		return list[lo]
	}
	return nil
}
