package supervisor

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/spec"
)

// Wiring is RUN/machines/NAME/machine.json: what berthd gives a machine's
// supervisor beyond its container.Config, and what berthd reads back when it
// observes the machine later (also after its own restart): the definition
// the machine was started with, the state directory its root lives in, the
// cgroup driver, its network attachment and port forwards.
type Wiring struct {
	Spec       *spec.Machine       `json:"spec"`
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
	b, err := os.ReadFile(d.Wiring())
	if err != nil {
		return nil, err
	}
	var w Wiring
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%s: %w", d.Wiring(), err)
	}
	return &w, nil
}

// WriteWiring writes a machine's machine.json atomically.
func WriteWiring(d rundir.Dir, w *Wiring) error {
	if err := os.MkdirAll(d.Path(), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(w, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(d.Wiring(), append(b, '\n'), 0o600)
}
