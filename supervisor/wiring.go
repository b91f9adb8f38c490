package supervisor

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/netconf"
)

// Wiring is what a machine's supervisor reads from RUN/machines/NAME/
// machine.json beyond its container.Config, and what berthd reads back when
// it observes the machine later (also after its own restart): the state
// directory its root lives in, the cgroup driver, its network attachment and
// port forwards. berthd's record in the same file also holds the definition
// the machine was started with (a type embedding Wiring), which the
// supervisor ignores: it never links the definition language.
type Wiring struct {
	StateDir   string              `json:"stateDir"`
	Driver     string              `json:"driver"`
	Attachment *netconf.Attachment `json:"attachment,omitempty"`
	Network    string              `json:"network,omitempty"` // the Network's name when attached
	// Forwards are the machine's port forwards; the supervisor relays those
	// the kernel cannot do ([::1]) for as long as the machine runs.
	Forwards []netconf.Forward `json:"forwards,omitempty"`
	// EphemeralImage is the digest of an ephemeral machine's image, whose
	// content the supervisor keeps in use while the machine runs.
	EphemeralImage string `json:"ephemeralImage,omitempty"`
}

// ReadWiring reads a machine's machine.json.
func ReadWiring(d rundir.Dir) (*Wiring, error) {
	var w Wiring
	if err := ReadRecord(d, &w); err != nil {
		return nil, err
	}
	return &w, nil
}

// ReadRecord reads a machine's machine.json into rec: a Wiring, or a type
// that embeds one.
func ReadRecord(d rundir.Dir, rec any) error {
	b, err := os.ReadFile(d.Wiring())
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, rec); err != nil {
		return fmt.Errorf("%s: %w", d.Wiring(), err)
	}
	return nil
}

// WriteWiring writes a machine's machine.json atomically from rec: a Wiring,
// or a type that embeds one.
func WriteWiring(d rundir.Dir, rec any) error {
	if err := os.MkdirAll(d.Path(), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(d.Wiring(), append(b, '\n'), 0o600)
}
