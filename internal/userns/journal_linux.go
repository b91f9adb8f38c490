package userns

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// journal keeps, for a shift under way, what chown(2) takes from a file and
// a re-run could not know any more: the set-user-ID and set-group-ID bits
// it clears and the file capability it drops. Each file that has either is
// written down (and synced) before its owner changes; so when a shift dies
// between a chown and the restore, the next run restores from here. The
// file lives outside the tree (the guest must never see it) and goes when
// the shift is complete.
type journal struct {
	path  string
	f     *os.File
	saved map[fileKey]savedMeta
}

// fileKey is an inode: device and number. Hard links share it.
type fileKey struct {
	dev uint64
	ino uint64
}

// savedMeta is what a file had before its chown: the permission bits
// (07777) and its security.capability value, nil for none.
type savedMeta struct {
	mode uint32
	caps []byte
}

// journalHeader starts a journal and names its shift, so that a journal is
// never applied to another shift.
func journalHeader(from, to uint32) string {
	return fmt.Sprintf("berth-shift 1 from %d to %d", from, to)
}

// openJournal opens the shift's journal, reading what an interrupted run
// wrote there, or makes a new one.
func openJournal(path string, from, to uint32) (*journal, error) {
	j := &journal{path: path, saved: map[fileKey]savedMeta{}}
	head := journalHeader(from, to)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		data = []byte(head + "\n")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		if err := j.load(string(data), head); err != nil {
			return nil, fmt.Errorf("journal %s: %w", path, err)
		}
	}
	if j.f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0); err != nil {
		return nil, err
	}
	if err := j.sync(); err != nil {
		j.f.Close()
		return nil, err
	}
	return j, nil
}

// load reads a journal's entries: "DEV INO MODE CAPS end" lines, MODE in
// octal, CAPS in hex or "-". A torn last line (the run died while writing
// it, so before that file's chown) lacks its "end" and is ignored.
func (j *journal) load(data, head string) error {
	sc := bufio.NewScanner(strings.NewReader(data))
	if !sc.Scan() || sc.Text() != head {
		return fmt.Errorf("it is not the journal of this shift (%s): finish or undo that shift first", head)
	}
	for sc.Scan() {
		var k fileKey
		var m savedMeta
		var caps, end string
		if n, _ := fmt.Sscanf(sc.Text(), "%d %d %o %s %s", &k.dev, &k.ino, &m.mode, &caps, &end); n != 5 || end != "end" {
			continue
		}
		if caps != "-" {
			b, err := hex.DecodeString(caps)
			if err != nil {
				continue
			}
			m.caps = b
		}
		j.saved[k] = m
	}
	return sc.Err()
}

// add writes a file's metadata down, durably, before its chown.
func (j *journal) add(k fileKey, m savedMeta) error {
	caps := "-"
	if m.caps != nil {
		caps = hex.EncodeToString(m.caps)
	}
	if _, err := fmt.Fprintf(j.f, "%d %d %o %s end\n", k.dev, k.ino, m.mode, caps); err != nil {
		return err
	}
	j.saved[k] = m
	return unix.Fdatasync(int(j.f.Fd()))
}

// sync makes the journal's existence durable: its data and its name.
func (j *journal) sync() error {
	if err := j.f.Sync(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(j.path))
}

// done removes the journal of a finished shift.
func (j *journal) done() error {
	j.f.Close()
	if err := os.Remove(j.path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(j.path))
}

// close leaves the journal for the next run.
func (j *journal) close() { j.f.Close() }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
