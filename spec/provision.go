package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Credential is one of a machine's credentials (systemd's credentials, passed
// as systemd-nspawn's --set-credential/--load-credential do): exactly one of
// its fields says where the value comes from. berth reads file, env and
// credential when the machine starts, never when it loads the definition.
type Credential struct {
	Value      Secret `json:"value,omitempty" doc:"The value itself (like systemd-nspawn --set-credential). It is never shown or stored in clear: status, plan, events and machine.json carry a hash of it. A definition applied with berth apply PATH is kept in berthd's state, so there a literal value is refused: use file, env or credential."`
	File       string `json:"file,omitempty" doc:"Absolute path of a host file berthd reads at each start (like systemd-nspawn --load-credential)." format:"abspath"`
	Env        string `json:"env,omitempty" doc:"Name of a variable in berthd's own environment, read at each start (for example set by berthd.service's Environment= or EnvironmentFile=)."`
	Credential string `json:"credential,omitempty" doc:"Name of one of berthd's own systemd credentials: the file of that name in berthd's $CREDENTIALS_DIRECTORY (LoadCredential= or SetCredentialEncrypted= in berthd.service), read at each start."`
}

// Secret is a literal credential value. In memory it is the clear text, as
// the definition wrote it; every other form of it is redacted: its JSON is
// "sha256:HEX" of the value (so the content hash, and machine.json, change
// when it changes, without holding it) and it prints as <redacted>. A Secret
// read back from JSON holds only that hash (Clear reports false).
type Secret string

// secretHashed marks a Secret that holds a hash read back from JSON: a NUL,
// which validation refuses in a literal, so no value can pass for one.
const secretHashed = "\x00"

// Sum is the value's redacted form, "sha256:HEX".
func (s Secret) Sum() string {
	if h, ok := strings.CutPrefix(string(s), secretHashed); ok {
		return h
	}
	// Domain-separated, so the hash is not the value's plain sha256.
	h := sha256.Sum256([]byte("berth credential\n" + string(s)))
	return "sha256:" + hex.EncodeToString(h[:])
}

// Clear is the value in clear; false when s was read back from JSON.
func (s Secret) Clear() (string, bool) {
	if strings.HasPrefix(string(s), secretHashed) {
		return "", false
	}
	return string(s), true
}

func (s Secret) String() string   { return "<redacted>" }
func (s Secret) GoString() string { return "<redacted>" }

func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.Sum()) }

func (s *Secret) UnmarshalJSON(b []byte) error {
	var h string
	if err := json.Unmarshal(b, &h); err != nil {
		return err
	}
	*s = Secret(secretHashed + h)
	return nil
}

// ProvisionFile is one entry of a machine's files: written into its root
// before its first boot (like cloud-init's write_files), never again.
type ProvisionFile struct {
	Path    string   `json:"path" doc:"Absolute path in the machine. Its parent directories are made (0755, root) when missing; a symbolic link on the way is followed inside the machine's root, never out of it." required:"true" format:"abspath"`
	Content string   `json:"content,omitempty" doc:"The file's content. Not a secret: berth plan's diff shows it; use credentials for secrets."`
	Source  string   `json:"source,omitempty" doc:"Absolute path of a host file to copy instead of content, read when the root is provisioned." format:"abspath"`
	Owner   string   `json:"owner,omitempty" doc:"UID:GID (or UID, the group then the same number) of the file inside the machine, numeric. Default 0:0 (the machine's root)."`
	Mode    FileMode `json:"mode,omitempty" doc:"Octal permissions as a string (\"0600\"). Default 0644."`
}

// DefaultFileMode is the mode of a provisioned file without one.
const DefaultFileMode FileMode = 0o644

// MaxCredentialSize is the most a machine's credentials may hold together, as
// systemd-nspawn's CREDENTIALS_TOTAL_SIZE_MAX.
const MaxCredentialSize = 1 << 20

var ownerRE = regexp.MustCompile(`^[0-9]{1,10}(:[0-9]{1,10})?$`)

// IDs are the file's owner, numeric; ok is false when Owner is not UID[:GID]
// of 32-bit IDs (validation refuses those).
func (f *ProvisionFile) IDs() (uid, gid uint32, ok bool) {
	if f.Owner == "" {
		return 0, 0, true
	}
	if !ownerRE.MatchString(f.Owner) {
		return 0, 0, false
	}
	u, g, both := strings.Cut(f.Owner, ":")
	if !both {
		g = u
	}
	uv, uerr := strconv.ParseUint(u, 10, 32)
	gv, gerr := strconv.ParseUint(g, 10, 32)
	// 4294967295 is (uid_t)-1, "no change" to chown.
	if uerr != nil || gerr != nil || uv == 1<<32-1 || gv == 1<<32-1 {
		return 0, 0, false
	}
	return uint32(uv), uint32(gv), true
}

// checkCredentialName applies systemd's rule for a credential's name (it is
// a file name in $CREDENTIALS_DIRECTORY): 1 to 255 bytes, no '/', not . or ..
func checkCredentialName(name string) error {
	switch {
	case name == "" || len(name) > 255:
		return fmt.Errorf("a credential's name has 1 to 255 characters")
	case name == "." || name == ".." || strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%q is not a credential name: it becomes a file name, so no '/' and not . or ..", name)
	}
	return nil
}

// validateCredentials checks each credential has one source, well formed.
func validateCredentials(d *doc, creds map[string]Credential) {
	for _, k := range sortedKeys(creds) {
		f, c := join("credentials", k), creds[k]
		if err := checkCredentialName(k); err != nil {
			d.errorf(f, "%s", err)
			continue
		}
		n := 0
		for _, set := range []bool{d.has(f + ".value"), c.File != "", c.Env != "", c.Credential != ""} {
			if set {
				n++
			}
		}
		switch {
		case n == 0:
			d.errorf(f, "has no value: give one of value, file, env or credential")
		case n > 1:
			d.errorf(f, "has more than one of value, file, env and credential: keep one")
		case strings.ContainsRune(string(c.Value), 0):
			d.errorf(f+".value", "contains a NUL byte: put binary values in a file")
		case c.File != "":
			checkAbs(d, f+".file", c.File)
		case c.Env != "" && !envRE.MatchString(c.Env):
			d.errorf(f+".env", "%q is not a variable name: use letters, digits and '_', not starting with a digit", c.Env)
		case c.Credential != "":
			if err := checkCredentialName(c.Credential); err != nil {
				d.errorf(f+".credential", "%s", err)
			}
		}
	}
}

// validateFiles checks the files to provision: a path each (not /, once
// only), content or a source, an owner of numbers.
func validateFiles(d *doc, files []ProvisionFile) {
	seen := map[string]int{}
	for i, pf := range files {
		f := fmt.Sprintf("files[%d]", i)
		if pf.Path == "" {
			d.errorf(f+".path", "missing: give the file's absolute path in the machine")
		} else if checkAbs(d, f+".path", pf.Path) {
			if pf.Path == "/" || strings.HasSuffix(pf.Path, "/") {
				d.errorf(f+".path", "%q is a directory: name a file", pf.Path)
			} else if j, dup := seen[pf.Path]; dup {
				d.errorf(f+".path", "%s is already written by files[%d]", pf.Path, j)
			}
			seen[pf.Path] = i
		}
		switch {
		case pf.Source != "" && d.has(f+".content"):
			d.errorf(f, "has both content and source: keep one")
		case pf.Source != "":
			checkAbs(d, f+".source", pf.Source)
		case !d.has(f + ".content"):
			d.errorf(f, "has neither content nor source: give one (content: \"\" for an empty file)")
		}
		if _, _, ok := pf.IDs(); !ok {
			d.errorf(f+".owner", "%q is not UID:GID: give numbers as the machine's /etc/passwd has them, like 1000:1000", pf.Owner)
		}
		if pf.Mode > 0o7777 {
			d.errorf(f+".mode", "%s is not a file mode (at most 7777)", pf.Mode)
		}
	}
}

// MarshalYAML keeps the value out of YAML output too (berth show).
func (s Secret) MarshalYAML() (any, error) { return s.Sum(), nil }
