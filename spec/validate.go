package spec

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/berthd/berth/internal/cpuset"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/syscalls"
)

// The checks run in two steps. validate* look at one document as it was written
// (before defaults, so "cpus: 0" is still told apart from no cpus at all);
// crossCheck looks at the defaulted set: references, address plans, port clashes.
// Type, enum, unknown-field and duplicate-key errors come from the decoder.

var (
	hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)
	envRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// checkName reports a name that is missing or is not a DNS label: names become
// directory names, unit names and interface names, so nothing like ../x or a
// capital letter gets through.
func checkName(d *doc, field, name, what string) bool {
	switch {
	case name == "" && d.has(field):
		d.errorf(field, "is empty: give the %s a name", what)
	case name == "":
		d.errorf(field, "missing: every %s needs a name", what)
	default:
		// berth's one name rule, shared with the runtime and the store.
		if err := rundir.CheckName(name); err != nil {
			d.errorf(field, "%s", err)
			return false
		}
		return true
	}
	return false
}

// checkAbs reports a path that is not absolute or contains . or .. elements.
func checkAbs(d *doc, field, p string) bool {
	switch {
	case !strings.HasPrefix(p, "/"):
		d.errorf(field, "%q is not an absolute path: start it with /", p)
	case strings.ContainsRune(p, 0):
		d.errorf(field, "contains a NUL byte")
	case slices.Contains(strings.Split(p, "/"), "..") || slices.Contains(strings.Split(p, "/"), "."):
		d.errorf(field, "%q contains . or .. elements: write it as %q", p, path.Clean(p))
	default:
		return true
	}
	return false
}

// checkInterfaceName applies the kernel's rules for a link name (dev_valid_name).
func checkInterfaceName(d *doc, field, name string) {
	switch {
	case name == "":
		d.errorf(field, "is empty")
	case len(name) > maxInterfaceNameLen:
		d.errorf(field, "%q is %d characters long: an interface name has at most %d", name, len(name), maxInterfaceNameLen)
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\r\v\f\x00"):
		d.errorf(field, "%q is not a valid interface name: no '/', ':' or spaces, and not . or ..", name)
	}
}

func (e *entry) validate() {
	switch {
	case e.machine != nil:
		validateMachine(e.d, e.machine)
	case e.network != nil:
		validateNetwork(e.d, e.network)
	case e.image != nil:
		validateImage(e.d, e.image)
	}
}

// reservedEnv are the variables berth itself gives init (the Container Interface).
var reservedEnv = []string{"container", "container_uuid", "NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY"}

// validateMachine checks a Machine document as written. Each part of the
// machine has its own check, run in the order of the fields so the errors of one
// document read top to bottom.
func validateMachine(d *doc, m *Machine) {
	checkName(d, "name", m.Name, "machine")
	if m.Image == "" {
		d.errorf("image", "missing: name the Image the machine's root is made from%s", inProfiles(m))
	} else {
		checkName(d, "image", m.Image, "image")
	}

	validatePrivateUsers(d, m)

	validateStartMode(d, m)
	if m.Hostname != "" && (len(m.Hostname) > 64 || !hostRE.MatchString(m.Hostname)) {
		d.errorf("hostname", "%q is not a valid hostname: at most 64 characters of letters, digits, '-' and '.'", m.Hostname)
	}
	validateRestart(d, &m.Restart)
	validateResources(d, &m.Resources)
	validateMachineNetwork(d, &m.Network)
	validateMounts(d, m.Mounts)
	validateEnvironment(d, m.Environment)
	validateCredentials(d, m.Credentials)
	validateFiles(d, m.Files)
	validateCapabilities(d, &m.Capabilities)
	validateSystemCallFilter(d, m.SystemCallFilter)
	validateHealth(d, m)
	validateEphemeral(d, m)
	validateCopies(d, m)

	if d.has("stopTimeout") && m.StopTimeout == 0 {
		d.errorf("stopTimeout", "must be greater than 0; remove it for the default (%s)", DefaultStopTimeout)
	}
	if m.ResolvConf == ResolvConfNetwork && !m.Network.Private() {
		d.errorf("resolvConf", "network needs the machine to be on a Network with dns servers; use host or off")
	}
}

// validatePrivateUsers checks a pinned range (aligned, neither the host's own
// first range nor past the last UID) and the mounts' idmap settings.
func validatePrivateUsers(d *doc, m *Machine) {
	if base, ok := m.PrivateUsers.Pinned(); ok {
		switch {
		case base%UserRangeSize != 0:
			d.errorf("privateUsers", "%d is not a multiple of 65536: a range starts on one (%d or %d)", base, base/UserRangeSize*UserRangeSize, (base/UserRangeSize+1)*UserRangeSize)
		case base == 0:
			d.errorf("privateUsers", "0 is the host's own users: write false to run the machine as the host's root")
		case uint64(base)+UserRangeSize > 1<<32-1:
			d.errorf("privateUsers", "%d: the range would pass the last UID (4294967294)", base)
		}
	}
	for i, mt := range m.Mounts {
		if mt.Idmap != nil && mt.Type == MountTmpfs {
			d.errorf(fmt.Sprintf("mounts[%d].idmap", i), "only a bind mount is idmapped; a tmpfs belongs to the machine's root")
		}
	}
}

// validateStartMode checks what the machine starts: it boots its init (boot
// mode, init and initArgs) or runs a command (application mode), never both, and
// the settings of the other mode are refused rather than silently ignored.
func validateStartMode(d *doc, m *Machine) {
	switch {
	case d.has("boot") && m.Boot && len(m.Command) > 0:
		d.errorf("boot", "true, and command is set too: a machine either boots its init or runs a command (application mode); remove one")
	case d.has("boot") && !m.Boot && len(m.Command) == 0:
		d.errorf("boot", "false needs a command to run (application mode); remove boot to boot the guest's init")
	case d.has("command") && len(m.Command) == 0:
		d.errorf("command", "is empty: give the program and its arguments, or remove command to boot the guest's init")
	}
	if len(m.Command) > 0 {
		if m.Command[0] == "" {
			d.errorf("command[0]", "the program to run is empty")
		}
		if m.Init != "" {
			d.errorf("init", "init is used only when the machine boots; with command, put the program in command[0]")
		}
		if len(m.InitArgs) > 0 {
			d.errorf("initArgs", "initArgs are used only when the machine boots; with command, put the arguments in command")
		}
	}
	if m.Init != "" {
		checkAbs(d, "init", m.Init)
	}
	if m.WorkDir != "" {
		checkAbs(d, "workingDir", m.WorkDir)
	}
}

// validateRestart checks the restart policy. The back-off settings are checked
// only when written: an unset one takes its default, which is always valid.
func validateRestart(d *doc, r *Restart) {
	if r.MaxRetries < 0 {
		d.errorf("restart.maxRetries", "%d is negative: use 0 for no limit", r.MaxRetries)
	}
	if d.has("restart.backoff") && r.Backoff == 0 {
		d.errorf("restart.backoff", "must be greater than 0; remove it for the default (%s)", DefaultBackoff)
	}
	if d.has("restart.maxBackoff") && r.MaxBackoff < max(r.Backoff, 1) {
		d.errorf("restart.maxBackoff", "%s is less than backoff (%s)", r.MaxBackoff, max(r.Backoff, DefaultBackoff))
	}
}

// validateEnvironment checks init's environment: names a shell can export, none
// of the variables berth sets itself, and no NUL (it ends a C string early).
func validateEnvironment(d *doc, env map[string]string) {
	for _, k := range sortedKeys(env) {
		f := join("environment", k)
		switch {
		case !envRE.MatchString(k):
			d.errorf(f, "%q is not a variable name: use letters, digits and '_', not starting with a digit", k)
		case slices.Contains(reservedEnv, k):
			d.errorf(f, "%s is set by berth (the container interface) and cannot be overridden", k)
		case strings.ContainsRune(env[k], 0):
			d.errorf(f, "the value contains a NUL byte")
		}
	}
}

// validateCapabilities checks that every name is a capability (with or without
// CAP_, suggesting the closest for a typo) and that none is both added and
// dropped, which would leave the result to the order they are applied in.
func validateCapabilities(d *doc, c *Capabilities) {
	caps := map[string]string{}
	for _, list := range []struct {
		field string
		names []string
	}{{"capabilities.add", c.Add}, {"capabilities.drop", c.Drop}} {
		for i, name := range list.names {
			f := fmt.Sprintf("%s[%d]", list.field, i)
			cc := canonicalCap(name)
			if !slices.Contains(capabilities, cc) {
				msg := fmt.Sprintf("%q is not a capability", name)
				if s := suggest(cc, capabilities); s != "" {
					msg += fmt.Sprintf("; did you mean %q?", strings.TrimPrefix(s, "CAP_"))
				}
				d.errorf(f, "%s (see capabilities(7))", msg)
				continue
			}
			if other, ok := caps[cc]; ok && other != list.field {
				d.errorf(f, "%s is both added and dropped", cc)
			}
			caps[cc] = list.field
		}
	}
}

// validateSystemCallFilter checks each entry against the runtime's own table of
// system calls and groups, so a typo fails here and not when the machine
// starts; a mistyped @group gets the closest group suggested.
func validateSystemCallFilter(d *doc, filter []string) {
	for i, e := range filter {
		f := fmt.Sprintf("systemCallFilter[%d]", i)
		if err := syscalls.CheckEntry(e); err != nil {
			msg := err.Error()
			if name := strings.TrimPrefix(e, "~"); strings.HasPrefix(name, "@") {
				if s := suggest(name, syscalls.GroupNames()); s != "" {
					msg = fmt.Sprintf("%s is not a system call group; did you mean %q?", name, s)
				}
			}
			d.errorf(f, "%s", msg)
		}
	}
}

func validateResources(d *doc, r *Resources) {
	if d.has("resources.memoryMax") && r.MemoryMax <= 0 {
		d.errorf("resources.memoryMax", "must be greater than 0; remove it for no limit")
	}
	if d.has("resources.memoryHigh") && r.MemoryHigh <= 0 {
		d.errorf("resources.memoryHigh", "must be greater than 0; remove it for no limit")
	}
	if r.MemoryMax > 0 && r.MemoryHigh > r.MemoryMax {
		d.errorf("resources.memoryHigh", "%s is above memoryMax (%s): the machine would be killed before it is throttled", r.MemoryHigh, r.MemoryMax)
	}
	if d.has("resources.cpus") && (r.CPUs <= 0 || math.IsNaN(r.CPUs) || math.IsInf(r.CPUs, 0)) {
		d.errorf("resources.cpus", "%g must be greater than 0 (1.5 = one and a half CPUs); remove it for no limit", r.CPUs)
	}
	for _, w := range []struct {
		field string
		v     int
	}{{"resources.cpuWeight", r.CPUWeight}, {"resources.ioWeight", r.IOWeight}} {
		if d.has(w.field) && (w.v < 1 || w.v > 10000) {
			d.errorf(w.field, "%d is out of range: a weight is from 1 to 10000 (default 100)", w.v)
		}
	}
	// The limit covers the machine's cgroup, berth's supervisor included (as a
	// TasksMax= on an nspawn unit covers nspawn): it and the payload's first
	// stage use about 20 tasks before the guest starts its own.
	if d.has("resources.pidsMax") && r.PidsMax < MinPidsMax {
		d.errorf("resources.pidsMax", "%d is too small: berth's supervisor and the machine's start use about 20 tasks of it; give at least %d, or remove it for the default (%d)", r.PidsMax, MinPidsMax, DefaultPidsMax)
	}
	if r.PidsMax > MaxPidsMax {
		d.errorf("resources.pidsMax", "%d is more than the kernel allows (%d, PID_MAX_LIMIT)", r.PidsMax, MaxPidsMax)
	}
	validateIOLimits(d, r.IO)
	if d.has("resources.cpuset") {
		if _, err := cpuset.Parse(r.CPUSet); err != nil {
			d.errorf("resources.cpuset", "%v", err)
		}
	}
}

// MinPidsMax is the smallest resources.pidsMax a machine can start with;
// MaxPidsMax is the kernel's PID_MAX_LIMIT on 64-bit.
const (
	MinPidsMax = 32
	MaxPidsMax = 4 << 20
)

func validateMachineNetwork(d *doc, n *MachineNetwork) {
	if n.Private() {
		checkName(d, "network.name", n.Name, "network")
	} else {
		what := n.Name
		if what == "" {
			what = NetworkNone
		}
		for _, f := range []string{"address", "address6", "mac", "ports"} {
			if d.has("network." + f) {
				d.errorf("network."+f, "needs a Network: the machine's network is %s; set network.name to a Network document", what)
			}
		}
	}
	if a := n.Address; a.IsValid() && !a.Addr().Is4() {
		d.errorf("network.address", "%s is not an IPv4 address; put IPv6 addresses in address6", a.Addr())
	}
	if a := n.Address6; a.IsValid() && !a.Addr().Is6() {
		d.errorf("network.address6", "%s is not an IPv6 address; put IPv4 addresses in address", a.Addr())
	}
	if n.MAC != "" {
		hw, err := net.ParseMAC(n.MAC)
		switch {
		case err != nil || len(hw) != 6:
			d.errorf("network.mac", "%q is not a MAC address: write six hex pairs, e.g. 02:00:0a:57:00:0a", n.MAC)
		case hw[0]&1 != 0:
			d.errorf("network.mac", "%s is a multicast address: the lowest bit of the first byte must be 0", n.MAC)
		case string(hw) == "\x00\x00\x00\x00\x00\x00":
			d.errorf("network.mac", "the all-zero address is not usable")
		}
	}
	for i, p := range n.Ports {
		f := fmt.Sprintf("network.ports[%d]", i)
		if p.HostPort < 1 || p.HostPort > 65535 {
			if p.HostPort == 0 && !d.has(f+".hostPort") {
				d.errorf(f, "hostPort is missing")
			} else {
				d.errorf(f+".hostPort", "%d is not a port number from 1 to 65535", p.HostPort)
			}
		}
		if d.has(f+".machinePort") && (p.MachinePort < 1 || p.MachinePort > 65535) {
			d.errorf(f+".machinePort", "%d is not a port number from 1 to 65535", p.MachinePort)
		}
	}
}

// forbiddenTargets are the API filesystems berth mounts itself; mounting over
// them would break the guest.
var forbiddenTargets = []string{"/proc", "/sys", "/dev"}

func validateMounts(d *doc, mounts []Mount) {
	targets := map[string]int{}
	for i, m := range mounts {
		f := fmt.Sprintf("mounts[%d]", i)
		typ := m.Type
		switch {
		case typ != "" || d.has(f+".type"):
			// written (a wrong type is reported by the decoder)
		case m.Source == "":
			d.errorf(f, "type is missing: a bind mount needs source, a tmpfs needs type: tmpfs")
			continue
		default:
			typ = MountBind
		}
		switch typ {
		case MountBind:
			if m.Source == "" {
				d.errorf(f+".source", "missing: a bind mount needs the host path to mount")
			} else {
				checkAbs(d, f+".source", m.Source)
			}
			if d.has(f + ".size") {
				d.errorf(f+".size", "size applies to tmpfs mounts only")
			}
			if d.has(f + ".mode") {
				d.errorf(f+".mode", "mode applies to tmpfs mounts only; a bind mount keeps the source's permissions")
			}
		case MountTmpfs:
			if d.has(f + ".source") {
				d.errorf(f+".source", "a tmpfs has no source; remove it or use type: bind")
			}
			if d.has(f + ".create") {
				d.errorf(f+".create", "create applies to bind mounts only")
			}
		}
		if m.Target == "" {
			d.errorf(f+".target", "missing: give the absolute path in the machine to mount on")
			continue
		}
		if !checkAbs(d, f+".target", m.Target) {
			continue
		}
		t := path.Clean(m.Target)
		if t == "/" {
			d.errorf(f+".target", "cannot mount over the machine's root /")
			continue
		}
		for _, bad := range forbiddenTargets {
			if t == bad || strings.HasPrefix(t, bad+"/") {
				d.errorf(f+".target", "%s is set up by berth for the guest (%s); mount somewhere else", t, bad)
			}
		}
		if j, dup := targets[t]; dup {
			d.errorf(f+".target", "%s is already mounted by mounts[%d]", t, j)
		}
		targets[t] = i
	}
}

func validateNetwork(d *doc, n *Network) {
	if checkName(d, "name", n.Name, "network") && (n.Name == NetworkNone || n.Name == NetworkHost) {
		d.errorf("name", "%q is reserved (a machine's network: %s means no network, %s the host's); choose another name", n.Name, NetworkNone, NetworkHost)
	}
	if d.has("bridge") {
		checkInterfaceName(d, "bridge", n.Bridge)
	}
	if !n.Subnet.IsValid() && !d.has("subnet") {
		d.errorf("subnet", "missing: give an IPv4 subnet in CIDR form, e.g. 10.87.0.0/24")
	}
	if checkSubnet(d, "subnet", n.Subnet, 4) && n.Gateway.IsValid() {
		checkHostAddr(d, "gateway", n.Gateway, n.Subnet, "subnet")
	}
	if !n.Subnet6.IsValid() && d.has("gateway6") {
		d.errorf("gateway6", "needs subnet6")
	}
	if checkSubnet(d, "subnet6", n.Subnet6, 6) && n.Gateway6.IsValid() {
		checkHostAddr(d, "gateway6", n.Gateway6, n.Subnet6, "subnet6")
	}
	if n.Resolver != nil && d.has("resolver.domain") {
		if msg := checkDomain(n.Resolver.Domain); msg != "" {
			d.errorf("resolver.domain", "%s", msg)
		}
	}
}

// The machines' domain on a network: lowercase DNS labels joined by dots,
// at most 253 characters in all (RFC 1035), no trailing dot.
const (
	domainPattern = `^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`
	maxDomainLen  = 253
)

var domainRE = regexp.MustCompile(domainPattern)

// checkDomain says what is wrong with a network's resolver domain, or "".
// The reverse-lookup trees (arpa) are the resolver's own, and local is
// multicast DNS's (RFC 6762): a name there would never reach the resolver
// on a host that runs an mDNS responder.
func checkDomain(s string) string {
	last := s[strings.LastIndexByte(s, '.')+1:]
	switch {
	case s == "":
		return "is empty; leave it out for the default " + DefaultDomain
	case len(s) > maxDomainLen:
		return fmt.Sprintf("%q is %d characters long: at most %d are allowed", s, len(s), maxDomainLen)
	case !domainRE.MatchString(s):
		msg := fmt.Sprintf("%q is not a domain: use lowercase DNS labels (letters, digits, '-') joined by dots, without a trailing dot", s)
		if l := strings.TrimSuffix(strings.ToLower(s), "."); domainRE.MatchString(l) {
			msg += fmt.Sprintf("; did you mean %q?", l)
		}
		return msg
	case slices.ContainsFunc(strings.Split(s, "."), func(l string) bool { return len(l) > 63 }):
		return fmt.Sprintf("%q has a label longer than 63 characters", s)
	case last == "arpa" || last == "local":
		return fmt.Sprintf("%q is in .%s, which is not for machine names; choose another domain, e.g. %s", s, last, DefaultDomain)
	}
	return ""
}

// checkSubnet reports a subnet (subnet: IPv4, subnet6: IPv6) that is not in CIDR
// form with zero host bits or has no room for a gateway and one machine. An unset
// subnet is fine here.
func checkSubnet(d *doc, field string, s netip.Prefix, family int) bool {
	bits, maxBits, example, other := 32, 30, 24, "put an IPv6 subnet in subnet6"
	if family == 6 {
		bits, maxBits, example, other = 128, 126, 64, "put the IPv4 subnet in subnet"
	}
	switch {
	case !s.IsValid():
		return false
	case s.Addr().BitLen() != bits:
		d.errorf(field, "%s is not IPv%d: %s", s, family, other)
	case s.Bits() == bits:
		d.errorf(field, "%s has no prefix length: write it in CIDR form, e.g. %s", s.Addr(), netip.PrefixFrom(s.Addr(), example).Masked())
	case s.Bits() > maxBits:
		d.errorf(field, "%s is too small: a network needs at least /%d (gateway and one machine)", s, maxBits)
	case s.Masked() != s:
		d.errorf(field, "%s has host bits set; did you mean %s?", s, s.Masked())
	default:
		return true
	}
	return false
}

// checkHostAddr reports an address that cannot be a host of subnet: outside it, its
// network address, or (IPv4) its broadcast address.
func checkHostAddr(d *doc, field string, a netip.Addr, subnet netip.Prefix, subnetField string) bool {
	if !subnet.IsValid() || subnet.Masked() != subnet {
		return false // the subnet is reported already
	}
	switch {
	case a.BitLen() != subnet.Addr().BitLen():
		d.errorf(field, "%s is not of the same family as %s %s", a, subnetField, subnet)
	case !subnet.Contains(a):
		d.errorf(field, "%s is outside %s %s", a, subnetField, subnet)
	case a == subnet.Addr():
		d.errorf(field, "%s is the network address of %s; use a host address such as %s", a, subnet, firstHost(subnet))
	case a.Is4() && a == broadcast(subnet):
		d.errorf(field, "%s is the broadcast address of %s", a, subnet)
	default:
		return true
	}
	return false
}

// broadcast is the last address of an IPv4 subnet.
func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// canonicalMAC writes a MAC address the one way (lowercase, colons), leaving text
// that is not a MAC alone for validation to report.
func canonicalMAC(s string) string {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return s
	}
	return hw.String()
}
