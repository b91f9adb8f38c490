package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/berthd/berth/internal/rundir"

	"golang.org/x/sys/unix"
)

// credentialsDir is where the guest finds its credentials, as under
// systemd-nspawn (docs/CONTAINER_INTERFACE.md): $CREDENTIALS_DIRECTORY of
// PID 1, which systemd (v252 and later) imports them as system credentials.
const credentialsDir = "/run/host/credentials"

// credential is one of the machine's credentials, in memory.
type credential struct {
	name string
	data []byte
}

// loadCredentials reads the credentials berthd left in the run directory
// into memory and removes them there, so that they exist on the host only
// in this process and, while the machine runs, in its own ramfs.
func (s *supervisor) loadCredentials() error {
	if len(s.cfg.Credentials) == 0 {
		return nil
	}
	dir := rundir.Dir(s.cfg.RuntimeDir).Credentials()
	defer os.RemoveAll(dir)
	for _, name := range s.cfg.Credentials {
		if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
			return fmt.Errorf("credential %q: not a file name", name)
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("credential %q: berthd left no value for it in %s (start the machine again)", name, dir)
		}
		if err != nil {
			return fmt.Errorf("credential %q: %w", name, err)
		}
		s.creds = append(s.creds, credential{name: name, data: data})
	}
	return nil
}

// mountCredentials mounts a ramfs at dir (in the machine's tree, in M0: the
// host never sees it) holding each credential as a 0400 file, then makes it
// read-only, as nspawn does. ramfs, not tmpfs: its pages are never swapped.
// It runs as the machine's root (asUser), whose files they become.
func mountCredentials(dir string, creds []credential) error {
	if len(creds) == 0 {
		return nil
	}
	if err := os.Mkdir(dir, 0o500); err != nil {
		return err
	}
	if err := mount("ramfs", dir, "ramfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
		return err
	}
	for _, c := range creds {
		f, err := os.OpenFile(filepath.Join(dir, c.name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o400)
		if err != nil {
			return err
		}
		_, err = f.Write(c.data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("credential %q: %w", c.name, err)
		}
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		return err
	}
	return mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}
