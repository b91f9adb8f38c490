package container

import "context"

// BindOptions describe a bind of a host directory or file into a running
// machine (`berth bind`), without a restart: it lasts until the machine
// stops or reboots, or the guest unmounts it.
type BindOptions struct {
	// Source is the host's directory or file, an absolute path.
	Source string `json:"source"`
	// Target is where it appears in the machine, an absolute path resolved
	// inside the machine's root (a symlink there never leads out of it).
	Target string `json:"target"`
	// ReadOnly makes the bind, and every mount below it, read-only; in a
	// machine with private users the guest cannot make it writable again.
	ReadOnly bool `json:"readOnly,omitempty"`
	// Mkdir makes Target when it is missing (a directory, or an empty
	// file for a file), owned by the machine's root.
	Mkdir bool `json:"mkdir,omitempty"`
	// NoIdmap gives a machine with private users the unmapped view of the
	// source (host owners outside its range show as nobody); by default the
	// bind is idmapped, as a definition's binds are: host UID 1000 is 1000
	// inside too.
	NoIdmap bool `json:"noIdmap,omitempty"`
}

// BindResult is what a bind did.
type BindResult struct {
	Machine  string `json:"machine"`
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly"`
	// Idmapped: the machine has private users and the bind maps its
	// owners into the machine's range.
	Idmapped bool `json:"idmapped"`
}

// Bind binds a host directory or file into the running machine: the
// supervisor moves it in through the machine's /run/host/incoming, as
// systemd-machined's BindMountMachine (`machinectl bind`) does.
func (c *Client) Bind(ctx context.Context, o BindOptions) (BindResult, error) {
	r, err := c.call(ctx, request{Op: "bind", Bind: &o})
	if err != nil || r.Bind == nil {
		return BindResult{}, err
	}
	return *r.Bind, nil
}
