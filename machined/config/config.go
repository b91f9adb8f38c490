// Package config is berthd's configuration file (/etc/berth/berthd.yaml: its
// sources of definitions and its directories) and the paths one berth
// installation uses, derived the same way by the daemon and the CLI.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultPath is where berthd reads its configuration.
const DefaultPath = "/etc/berth/berthd.yaml"

// DefaultYAML is the configuration `berth install` writes when none exists.
const DefaultYAML = `# berthd configuration. See docs/daemon.md in berth's sources.
#
# sources: where the machine definitions live. A directory is watched for changes;
# a Git repository is polled. Definitions applied with "berth apply PATH" are
# kept in the state directory and need no entry here.
sources:
  - path: /etc/berth/machines
#  - git:
#      url: https://example.org/infra/machines.git
#      branch: main
#      path: berth          # a folder inside the repository (optional)
#      interval: 1m
stateDir: /var/lib/berth
runtimeDir: /run/berth
logDir: /var/log/berth
socket: /run/berth/berthd.sock
parallelism: 32     # the most machines started or changed at once (fewer while the CPU is saturated)
resync: 1m          # periodic full reconcile (drift repair)
`

// DefaultParallelism bounds the machines started or changed at once when the
// configuration does not: a bound, not a target — beyond one per CPU, berthd
// starts more only while the CPU is not saturated (machined's gate).
const DefaultParallelism = 32

// Config is berthd's configuration file.
type Config struct {
	Sources     []SourceConfig `yaml:"sources" json:"sources"`
	StateDir    string         `yaml:"stateDir" json:"stateDir"`
	RuntimeDir  string         `yaml:"runtimeDir" json:"runtimeDir"`
	LogDir      string         `yaml:"logDir" json:"logDir"`
	Socket      string         `yaml:"socket" json:"socket"`
	Parallelism int            `yaml:"parallelism" json:"parallelism"`
	Resync      Duration       `yaml:"resync" json:"resync"`
}

// SourceConfig is one place definitions come from: exactly one of Path or Git.
type SourceConfig struct {
	Path string     `yaml:"path,omitempty" json:"path,omitempty"`
	Git  *GitSource `yaml:"git,omitempty" json:"git,omitempty"`
}

// GitSource is a Git repository polled for definitions.
type GitSource struct {
	URL      string   `yaml:"url" json:"url"`
	Branch   string   `yaml:"branch,omitempty" json:"branch,omitempty"`
	Path     string   `yaml:"path,omitempty" json:"path,omitempty"`
	Interval Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
}

// Duration is a time.Duration written as "30s", "5m" in YAML and JSON.
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration like 30s or 5m", s)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Paths are the directories and files one berth installation uses. The CLI
// without a daemon and the daemon derive them the same way.
type Paths struct {
	StateDir   string
	RuntimeDir string
	LogDir     string
	Socket     string
}

// DefaultPaths returns the standard paths, honouring BERTH_STATE_DIR,
// BERTH_RUNTIME_DIR and BERTH_LOG_DIR.
func DefaultPaths() Paths {
	p := Paths{
		StateDir:   envOr("BERTH_STATE_DIR", "/var/lib/berth"),
		RuntimeDir: envOr("BERTH_RUNTIME_DIR", "/run/berth"),
		LogDir:     envOr("BERTH_LOG_DIR", "/var/log/berth"),
	}
	p.Socket = filepath.Join(p.RuntimeDir, "berthd.sock")
	return p
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Load reads berthd's configuration. A missing file at the default path is
// not an error: the defaults (no configured sources) apply.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && path == DefaultPath {
		data = nil
	} else if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes a configuration strictly and fills in defaults.
func Parse(path string, data []byte) (*Config, error) {
	c := &Config{}
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil {
			return nil, fmt.Errorf("%s: %w", path, cleanYAMLError(err))
		}
	}
	def := DefaultPaths()
	if c.StateDir == "" {
		c.StateDir = def.StateDir
	}
	if c.RuntimeDir == "" {
		c.RuntimeDir = def.RuntimeDir
	}
	if c.LogDir == "" {
		c.LogDir = def.LogDir
	}
	if c.Socket == "" {
		c.Socket = filepath.Join(c.RuntimeDir, "berthd.sock")
	}
	if c.Parallelism <= 0 {
		c.Parallelism = DefaultParallelism
	}
	if c.Resync <= 0 {
		c.Resync = Duration(time.Minute)
	}
	var errs []string
	for i, s := range c.Sources {
		switch {
		case s.Path != "" && s.Git != nil:
			errs = append(errs, fmt.Sprintf("sources[%d]: give either path or git, not both", i))
		case s.Path == "" && s.Git == nil:
			errs = append(errs, fmt.Sprintf("sources[%d]: needs path or git", i))
		case s.Path != "" && !filepath.IsAbs(s.Path):
			errs = append(errs, fmt.Sprintf("sources[%d].path: %q must be an absolute path", i, s.Path))
		case s.Git != nil && s.Git.URL == "":
			errs = append(errs, fmt.Sprintf("sources[%d].git.url: missing", i))
		case s.Git != nil:
			if s.Git.Branch == "" {
				s.Git.Branch = "main"
			}
			if s.Git.Interval <= 0 {
				s.Git.Interval = Duration(time.Minute)
			}
			if s.Git.Path != "" && (filepath.IsAbs(s.Git.Path) || strings.HasPrefix(filepath.Clean(s.Git.Path), "..")) {
				errs = append(errs, fmt.Sprintf("sources[%d].git.path: %q must be a relative path inside the repository", i, s.Git.Path))
			}
		}
	}
	for _, p := range []struct{ field, v string }{{"stateDir", c.StateDir}, {"runtimeDir", c.RuntimeDir}, {"logDir", c.LogDir}, {"socket", c.Socket}} {
		if !filepath.IsAbs(p.v) {
			errs = append(errs, fmt.Sprintf("%s: %q must be an absolute path", p.field, p.v))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %s", path, strings.Join(errs, "; "))
	}
	return c, nil
}

// Paths returns the configured paths.
func (c *Config) Paths() Paths {
	return Paths{StateDir: c.StateDir, RuntimeDir: c.RuntimeDir, LogDir: c.LogDir, Socket: c.Socket}
}

// cleanYAMLError says what the YAML decoder found in words of the file, not of
// Go: "line 3: unknown field bogus", without the decoder's type names.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		lines := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			e = goTypeName.ReplaceAllString(e, "")
			e = yamlTag.ReplaceAllString(e, "")
			lines[i] = unknownField.ReplaceAllString(e, "unknown field $1")
		}
		return errors.New(strings.Join(lines, "; "))
	}
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}

var (
	goTypeName   = regexp.MustCompile(` in type [*\[\]\w.]+$`)
	yamlTag      = regexp.MustCompile(`!!\w+ `)
	unknownField = regexp.MustCompile(`field (\S+) not found`)
)
