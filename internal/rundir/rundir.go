// Package rundir owns a machine's runtime directory, RUNTIME/machines/NAME,
// and the identities berth derives from a machine's name: its UUID (the seed
// of the guest's machine ID), the names of its links, its console log. Every
// other package asks here for a path or a name, and nobody else spells one,
// so `berth boot -M web` and berthd's web are the same machine.
package rundir

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/berthd/berth/internal/errdefs"
)

// Dir is one machine's runtime directory.
type Dir string

// For is the runtime directory of machine name under berth's runtime
// directory (--runtime-dir, /run/berth).
func For(runtimeDir, name string) Dir {
	return Dir(filepath.Join(runtimeDir, MachinesDir, name))
}

// MachinesDir is the folder of the machines' runtime directories.
const MachinesDir = "machines"

// Path is the directory itself.
func (d Dir) Path() string { return string(d) }

// Name is the machine's name: the directory's.
func (d Dir) Name() string { return filepath.Base(string(d)) }

func (d Dir) file(name string) string { return filepath.Join(string(d), name) }

// The files of a runtime directory, and who writes them.
const (
	configFile        = "config.json"       // the supervisor's container.Config (SpawnDetached)
	stateFile         = "state.json"        // the supervisor's public state (container)
	handledStateFile  = "state.last.json"   // state.json of a run whose end was handled (machined)
	wiringFile        = "machine.json"      // what berthd started the machine with (supervisor stage)
	systemdStopFile   = "systemd-stop.json" // systemd asked the machine to stop (supervisor stage)
	controlSocketFile = "control.sock"      // the supervisor's control socket
	notifySocketFile  = "notify"            // the guest's sd_notify socket, /run/host/notify inside
	rootMountFile     = "root"              // the mount point of the root in the payload's namespace
	layersDir         = "layers"            // the mount points of an overlay root's idmapped layers
	scratchDir        = "scratch"           // the mount point of an ephemeral root's tmpfs
	seedDir           = "seed"              // the files berth puts on an ephemeral root at each boot
	credentialsDir    = "credentials"       // the machine's credentials, until its supervisor read them
	bindsDir          = "binds"             // where the definition's binds wait for the init stage
	supervisorLogFile = "supervisor.log"    // a detached supervisor's own output
	stateTempPattern  = ".state.json.tmp-*" // state.json being replaced
)

// Config is config.json: the detached supervisor's container.Config.
func (d Dir) Config() string { return d.file(configFile) }

// State is state.json: the supervisor's public state.
func (d Dir) State() string { return d.file(stateFile) }

// StateTempPattern is the glob of state.json's temporary files.
func (d Dir) StateTempPattern() string { return d.file(stateTempPattern) }

// HandledState is state.last.json: the state of a run whose end was handled.
func (d Dir) HandledState() string { return d.file(handledStateFile) }

// Wiring is machine.json: the definition, attachment and state directory
// berthd started the machine with.
func (d Dir) Wiring() string { return d.file(wiringFile) }

// SystemdStop is systemd-stop.json: systemd asked the machine to stop.
func (d Dir) SystemdStop() string { return d.file(systemdStopFile) }

// ControlSocket is control.sock, the supervisor's control socket.
func (d Dir) ControlSocket() string { return d.file(controlSocketFile) }

// NotifySocket is the guest's sd_notify socket (/run/host/notify inside).
func (d Dir) NotifySocket() string { return d.file(notifySocketFile) }

// RootMount is the mount point of the machine's root in the mount namespace
// its supervisor builds the tree in (an empty directory on the host).
func (d Dir) RootMount() string { return d.file(rootMountFile) }

// Layers holds the mount points of an overlay root's idmapped layers in that
// mount namespace (empty directories on the host).
func (d Dir) Layers() string { return d.file(layersDir) }

// Scratch is the mount point of an ephemeral root's tmpfs (its upper and work
// directories) in that mount namespace (an empty directory on the host).
func (d Dir) Scratch() string { return d.file(scratchDir) }

// Seed holds the files berth puts on an ephemeral root's fresh layer at each
// boot (resolv.conf), as an upper directory would.
func (d Dir) Seed() string { return d.file(seedDir) }

// BindStage is where the i-th of the machine's mounts (a bind) is made in that
// mount namespace, outside the root, for the init stage to attach in its own
// (an empty directory or file on the host).
func (d Dir) BindStage(i int) string { return filepath.Join(d.file(bindsDir), strconv.Itoa(i)) }

// Credentials is where berthd leaves a machine's credentials (0700, files
// 0400, root's) for its supervisor, which reads them into memory and removes
// the directory before the first boot.
func (d Dir) Credentials() string { return d.file(credentialsDir) }

// BindStages holds every BindStage.
func (d Dir) BindStages() string { return d.file(bindsDir) }

// SupervisorLog is a detached supervisor's own log.
func (d Dir) SupervisorLog() string { return d.file(supervisorLogFile) }

// SupervisorFiles are what a supervisor keeps in the directory while the
// machine runs (and what one killed before it could clean up leaves).
func (d Dir) SupervisorFiles() []string {
	return []string{d.State(), d.ControlSocket(), d.NotifySocket(), d.RootMount()}
}

// PropagateDir holds a directory per running machine, PropagateDir/NAME,
// whose mounts propagate into the machine's /run/host/incoming: the path
// systemd-nspawn uses, because systemd-machined's BindMountMachine
// (`machinectl bind`) looks for it there.
const PropagateDir = "/run/systemd/nspawn/propagate"

// Propagate is machine name's propagation directory (PropagateDir).
func Propagate(name string) string { return filepath.Join(PropagateDir, name) }

// MaxLen is the longest runtime directory a machine may have: sockets live
// in it, and sockaddr_un holds 108 bytes.
const MaxLen = 90

// ConsoleLog is where a machine's console is logged: LOGDIR/NAME.console.log.
func ConsoleLog(logDir, name string) string {
	return filepath.Join(logDir, name+".console.log")
}

// nameRE is the rule for machine (and image and network) names: a DNS label,
// lowercase. Names become directory, file, unit and link names.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// MaxNameLen is the longest name: a DNS label's 63.
const MaxNameLen = 63

// NamePattern is the name rule as a regular expression (for the JSON Schema).
var NamePattern = nameRE.String()

// CheckName reports why s cannot name a machine, an image or a network, or
// nil; the error is errdefs.ErrInvalid and says what to change.
func CheckName(s string) error {
	var msg string
	switch {
	case s == "":
		msg = "the name is empty"
	case len(s) > MaxNameLen:
		msg = fmt.Sprintf("%q is %d characters long: at most %d are allowed", s, len(s), MaxNameLen)
	case !nameRE.MatchString(s):
		msg = fmt.Sprintf("%q is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit", s)
		if l := strings.ToLower(s); l != s && nameRE.MatchString(l) {
			msg += fmt.Sprintf("; did you mean %q?", l)
		}
	default:
		return nil
	}
	return &nameError{msg}
}

type nameError struct{ msg string }

func (e *nameError) Error() string        { return e.msg }
func (e *nameError) Is(target error) bool { return target == errdefs.ErrInvalid }

// SanitizeName turns any string (a directory's name) into a valid machine
// name: lowercase, other characters as '-', at most 63, "machine" if nothing
// is left.
func SanitizeName(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	n := strings.Trim(b.String(), "-")
	for strings.Contains(n, "--") {
		n = strings.ReplaceAll(n, "--", "-")
	}
	if len(n) > MaxNameLen {
		n = strings.TrimRight(n[:MaxNameLen], "-")
	}
	if n == "" {
		n = "machine"
	}
	return n
}

// MachineUUID is the machine's stable 128-bit ID, 32 hex digits, derived from
// its name: the guest's /etc/machine-id is seeded from it (container_uuid),
// so it stays the same across restarts, re-creations, host reboots and
// between `berth boot -M NAME` and berthd's NAME, without any state to keep.
func MachineUUID(name string) string {
	h := sha256.Sum256([]byte("berth machine\x00" + name))
	h[6] = (h[6] & 0x0f) | 0x40 // a version-4-shaped UUID, as systemd makes them
	h[8] = (h[8] & 0x3f) | 0x80
	return hex.EncodeToString(h[:16])
}

// Link names are limited to IFNAMSIZ-1 = 15 bytes by the kernel.
const maxIfName = 15

// hashLen is how many characters of hash a shortened link name ends with: 7
// base32 characters are 35 bits, so even among a thousand long names that
// share their first characters the chance of any two colliding is about 1 in
// 70,000 (nspawn's 4 base64 characters, 24 bits, would give 3%). netconf still
// checks that a link it finds is the machine's own and refuses a clash.
const hashLen = 7

// LinkName joins prefix and name ("vb-" and a machine, "br-" and a network)
// and, when the result is not a usable link name as it is (longer than 15
// bytes, or a character a link name cannot have), keeps as much of it as fits
// and ends it with a hash of the whole name, so that two names never get the
// same link.
func LinkName(prefix, name string) string {
	full := prefix + name
	if len(full) <= maxIfName && validIfChars(name) {
		return full
	}
	keep := maxIfName - hashLen
	var b strings.Builder
	b.WriteString(prefix)
	for i := 0; i < len(name) && b.Len() < keep; i++ {
		c := name[i]
		if !validIfChar(c) {
			c = '-'
		}
		b.WriteByte(c)
	}
	b.WriteString(shortHash(name))
	return b.String()
}

// ValidLinkName reports whether s can name a link as it is: at most 15
// bytes of characters a link name may have.
func ValidLinkName(s string) bool { return len(s) <= maxIfName && validIfChars(s) }

// validIfChar reports whether c may appear in a link name: the kernel refuses
// '/', ':' and white space, and berth also keeps to printable ASCII so that
// names stay readable in `ip link` and usable in shells.
func validIfChar(c byte) bool {
	return c > ' ' && c < 0x7f && c != '/' && c != ':' && c != '%'
}

func validIfChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if !validIfChar(s[i]) {
			return false
		}
	}
	return s != "" && s != "." && s != ".."
}

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func shortHash(name string) string {
	sum := sha256.Sum256([]byte("berth-ifname\x00" + name))
	return lowerBase32.EncodeToString(sum[:])[:hashLen]
}

// NetworksDir is the folder of the networks' runtime directories.
const NetworksDir = "networks"

// NetDir is one network's runtime directory, RUNTIME/networks/NAME: its DNS
// resolver's files and the name records of the machines attached to it.
type NetDir string

// ForNetwork is the runtime directory of network name under berth's runtime
// directory.
func ForNetwork(runtimeDir, name string) NetDir {
	return NetDir(filepath.Join(runtimeDir, NetworksDir, name))
}

// Path is the directory itself.
func (d NetDir) Path() string { return string(d) }

// Name is the network's name: the directory's.
func (d NetDir) Name() string { return filepath.Base(string(d)) }

// The files of a network's runtime directory, and who writes them.
const (
	namesDir      = "names"    // one record per attached machine (the machine's supervisor)
	dnsConfigFile = "dns.json" // the resolver's configuration (machined)
	dnsStateFile  = "dns.pid"  // the running resolver's PID and start time (the resolver)
	dnsLockFile   = "dns.lock" // held by the running resolver for its life
	dnsLogFile    = "dns.log"  // the resolver's own output
)

// Names is the folder of the name records, one file per machine.
func (d NetDir) Names() string { return filepath.Join(string(d), namesDir) }

// NameRecord is the record of machine's names and addresses on the network.
func (d NetDir) NameRecord(machine string) string { return filepath.Join(d.Names(), machine) }

// DNSConfig is dns.json: the configuration the resolver runs with.
func (d NetDir) DNSConfig() string { return filepath.Join(string(d), dnsConfigFile) }

// DNSState is dns.pid: the resolver's PID and start time.
func (d NetDir) DNSState() string { return filepath.Join(string(d), dnsStateFile) }

// DNSLock is dns.lock, which the running resolver holds.
func (d NetDir) DNSLock() string { return filepath.Join(string(d), dnsLockFile) }

// DNSLog is the resolver's own log.
func (d NetDir) DNSLog() string { return filepath.Join(string(d), dnsLogFile) }

// RuntimeRoot is berth's runtime directory the machine's directory is in.
func (d Dir) RuntimeRoot() string { return filepath.Dir(filepath.Dir(string(d))) }
