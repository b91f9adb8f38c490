package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/safecopy"
	"github.com/berthd/berth/internal/userns"
	"github.com/berthd/berth/rootfs"
	"github.com/berthd/berth/spec"
)

// credentialValue reads one credential where the definition says it is:
// berthd reads them at each start, so a changed file takes effect at the
// next start (as nspawn's --load-credential).
func credentialValue(machine, name string, c spec.Credential) ([]byte, error) {
	where := fmt.Sprintf("machine %q: credentials.%s", machine, name)
	switch {
	case c.File != "":
		b, err := readLimited(c.File)
		if err != nil {
			return nil, fmt.Errorf("%s: file: %w", where, err)
		}
		return b, nil
	case c.Env != "":
		v, ok := os.LookupEnv(c.Env)
		if !ok {
			return nil, fmt.Errorf("%s: env: berthd's environment has no %s (set it in berthd.service's Environment= or EnvironmentFile=)", where, c.Env)
		}
		return []byte(v), nil
	case c.Credential != "":
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return nil, fmt.Errorf("%s: credential: berthd has no $CREDENTIALS_DIRECTORY: give berthd.service LoadCredential=%s:PATH (or SetCredentialEncrypted=)", where, c.Credential)
		}
		b, err := readLimited(filepath.Join(dir, c.Credential))
		if err != nil {
			return nil, fmt.Errorf("%s: credential: %w", where, err)
		}
		return b, nil
	}
	v, ok := c.Value.Clear()
	if !ok {
		return nil, fmt.Errorf("%s: the value was stored only as its hash: apply the definition again", where)
	}
	return []byte(v), nil
}

// readLimited reads a host file of at most spec.MaxCredentialSize bytes.
func readLimited(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, spec.MaxCredentialSize+1))
	if err == nil && len(b) > spec.MaxCredentialSize {
		err = fmt.Errorf("%s is larger than %d bytes", p, spec.MaxCredentialSize)
	}
	return b, err
}

// writeCredentials reads the machine's credentials and leaves them for its
// supervisor in the run directory (0700, files 0400, root's, on /run's
// tmpfs), which reads them into memory and removes them before the first
// boot; it returns their names for the container config.
func writeCredentials(runDir string, m *spec.Machine) ([]string, error) {
	dir := rundir.Dir(runDir).Credentials()
	_ = os.RemoveAll(dir) // a supervisor that died before it read them
	if len(m.Credentials) == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("machine %q: credentials: %w", m.Name, err)
	}
	var names []string
	total := 0
	for name, c := range m.Credentials {
		b, err := credentialValue(m.Name, name, c)
		if err == nil {
			if total += len(b); total > spec.MaxCredentialSize {
				err = fmt.Errorf("machine %q: credentials: together more than %d bytes (systemd-nspawn's limit too)", m.Name, spec.MaxCredentialSize)
			}
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), b, 0o400)
		}
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// provision writes the machine's files into its root before its first boot,
// once (rootfs.Store.Provision records it).
func (h *Host) provision(ctx context.Context, m *spec.Machine) error {
	var write func(*rootfs.Mounted) error
	if len(m.Files) > 0 {
		write = func(mt *rootfs.Mounted) error {
			_, private, err := userns.Open(h.paths.StateDir).Get(m.Name)
			if err != nil {
				return err
			}
			g := &safecopy.Guest{Name: m.Name, Root: int(mt.Root.Fd()), Offset: mt.Shift, Private: private || mt.Shift != 0}
			for i, f := range m.Files {
				data := []byte(f.Content)
				if f.Source != "" {
					if data, err = os.ReadFile(f.Source); err != nil {
						return fmt.Errorf("files[%d].source: %w", i, err)
					}
				}
				uid, gid, _ := f.IDs() // validated
				if g.Private && (uid >= safecopy.Size || gid >= safecopy.Size) {
					return fmt.Errorf("files[%d].owner: %s is outside the machine's %d IDs (privateUsers): give IDs below %d", i, f.Owner, safecopy.Size, safecopy.Size)
				}
				if err := safecopy.WriteFile(ctx, g, f.Path, data, uid, gid, uint32(f.Mode)); err != nil {
					return fmt.Errorf("files[%d] (%s): %w", i, f.Path, err)
				}
			}
			return nil
		}
	}
	_, err := h.images.Provision(m.Name, write)
	if err != nil && !errors.Is(err, rootfs.ErrNotFound) {
		return err
	}
	return nil
}
