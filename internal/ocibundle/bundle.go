// Package ocibundle turns an OCI runtime bundle (a directory with a
// config.json and a root filesystem, as `runc spec` or `umoci unpack` make
// it) into a berth machine config, the way `systemd-nspawn --oci-bundle=`
// reads one: the process (args, env, cwd, user, capabilities, rlimits,
// terminal), the hostname, the root and its read-only flag, the mounts, the
// namespaces and ID mappings, linux.resources' memory, CPU, pids and block
// I/O weight, and the masked and read-only paths.
//
// Nothing is silently dropped: every field of config.json that berth does
// not carry out is an error that names it by its JSON path
// ("config.json: linux.devices: not supported by berth …"), and all of them
// are reported at once. Annotations are ignored, as the runtime spec allows.
// The conversion is a pure function of config.json and the bundle's files
// (Parse); Load reads the file.
package ocibundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/errdefs"
)

// Bundle is an OCI runtime bundle made into a machine.
type Bundle struct {
	// Dir is the bundle's directory, absolute.
	Dir string
	// Config is the machine as the bundle describes it: root, process,
	// hostname, mounts, resources, capabilities, network mode and console
	// ("pty" for process.terminal, else "passthrough"). The caller adds the
	// name, UUID, runtime directory, users and what else is berth's own.
	Config container.Config
	// UserNS is the bundle's user namespace: nil without one (the machine's
	// root is the host's root).
	UserNS *UserNS
}

// UserNS is a bundle's user namespace: the first host ID of its one range of
// 65536 IDs (linux.uidMappings and gidMappings), or 0 when the bundle gives
// no mappings and berth is to pick a range.
type UserNS struct {
	HostID uint32
}

// FieldError is what is wrong with one field of a bundle's config.json,
// named by its JSON path. It is of class errdefs.ErrInvalid.
type FieldError struct {
	File string // the config.json as the caller named it
	Path string // "linux.resources.devices[1]"
	Msg  string
}

func (e *FieldError) Error() string { return e.File + ": " + e.Path + ": " + e.Msg }

func (e *FieldError) Is(target error) bool { return target == errdefs.ErrInvalid }

// Load reads dir/config.json and converts it (Parse). Errors name the file
// as dir/config.json.
func Load(dir string) (*Bundle, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("OCI bundle %s: %w (an OCI runtime bundle is a directory with config.json and the root filesystem it names)", dir, err)
	}
	return Parse(file, data, abs)
}

// Parse converts config.json's data, of the bundle in the absolute directory
// dir, into a machine; file names config.json in errors. The error, when
// there is one, lists every field berth refuses (errors.Join of
// *FieldError).
func Parse(file string, data []byte, dir string) (*Bundle, error) {
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, syntaxError(file, data, err)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, syntaxError(file, data, err)
	}
	c := &conv{file: file, dir: dir, b: &Bundle{Dir: dir}}
	c.unsupported(raw)
	c.spec(&s)
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return c.b, nil
}

// syntaxError says where config.json is not JSON of the runtime spec's
// shape, as file:line:col when the decoder knows the offset.
func syntaxError(file string, data []byte, err error) error {
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	}
	if off < 0 || off > int64(len(data)) {
		return fmt.Errorf("%s: %w: %v", file, errdefs.ErrInvalid, err)
	}
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - (bytes.LastIndexByte(before, '\n') + 1)
	return fmt.Errorf("%s:%d:%d: %w: %v", file, line, col, errdefs.ErrInvalid, err)
}

// conv is one conversion: the bundle being built and the errors found.
type conv struct {
	file string
	dir  string
	b    *Bundle
	errs []error
}

func (c *conv) fail(path, format string, a ...any) {
	c.errs = append(c.errs, &FieldError{File: c.file, Path: path, Msg: fmt.Sprintf(format, a...)})
}

// spec converts every part of the runtime spec berth reads.
func (c *conv) spec(s *specs.Spec) {
	switch v := s.Version; {
	case v == "":
		c.fail("ociVersion", "missing (berth reads version 1 of the OCI runtime spec)")
	case v != "1" && !strings.HasPrefix(v, "1."):
		c.fail("ociVersion", "%q: berth reads version 1 of the OCI runtime spec", v)
	}
	cfg := &c.b.Config
	if len(s.Hostname) > 64 {
		c.fail("hostname", "%q: at most 64 characters", s.Hostname)
	}
	cfg.Hostname = s.Hostname
	c.root(s.Root)
	var linux specs.Linux
	if s.Linux != nil {
		linux = *s.Linux
	}
	c.namespaces(linux)
	c.process(s.Process)
	c.mounts(s.Mounts)
	c.resources(linux.Resources)
	c.masks(linux)
}

// root resolves root.path against the bundle directory.
func (c *conv) root(r *specs.Root) {
	if r == nil || r.Path == "" {
		c.fail("root.path", "missing: the bundle's root filesystem (\"rootfs\" in the bundle directory, as runc spec writes it)")
		return
	}
	p := r.Path
	if !filepath.IsAbs(p) {
		p = filepath.Join(c.dir, p)
	}
	if st, err := os.Stat(p); err != nil || !st.IsDir() {
		c.fail("root.path", "%q: not a directory (%s)", r.Path, p)
		return
	}
	c.b.Config.Root = container.Root{Dir: filepath.Clean(p), ReadOnly: r.Readonly}
}
