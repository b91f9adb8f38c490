package spec

import (
	"fmt"
	"strconv"

	"github.com/berthd/berth/internal/rundir"
)

// MaxCopies bounds a template: a lab of a thousand machines is already far
// past what one host runs, and a typo (copies: 10000) should not plan them.
const MaxCopies = 1000

// CopyName is the name of a template's i-th copy (from 1).
func CopyName(template string, i int) string { return template + "-" + strconv.Itoa(i) }

// validateCopies checks a template (copies: N) as written: the count, the
// copies' names, and that it pins nothing only one machine may have.
func validateCopies(d *doc, m *Machine) {
	if !d.has("copies") {
		return
	}
	if m.Copies < 1 || m.Copies > MaxCopies {
		d.errorf("copies", "%d: a template makes 1 to %d copies; to run none, set state: stopped or remove the document", m.Copies, MaxCopies)
		return
	}
	if last := CopyName(m.Name, m.Copies); m.Name != "" && rundir.CheckName(m.Name) == nil && len(last) > rundir.MaxNameLen {
		d.errorf("name", "%q is too long for %d copies: its last copy %q would have %d characters, at most %d are allowed", m.Name, m.Copies, last, len(last), rundir.MaxNameLen)
	}
	pinned := []struct{ field, what string }{
		{"hostname", "every copy's hostname is its own name"},
		{"network.address", "every copy gets its own address from the network's pool"},
		{"network.address6", "every copy gets its own address from the network's pool"},
		{"network.mac", "every copy gets its own MAC"},
		{"network.ports", "a host port forwards to one machine"},
	}
	for _, p := range pinned {
		if d.has(p.field) {
			d.errorf(p.field, "a template (copies: %d) cannot set %s: %s", m.Copies, p.field, p.what)
		}
	}
	if _, ok := m.PrivateUsers.Pinned(); ok {
		d.errorf("privateUsers", "a template (copies: %d) cannot pin a UID range: every copy picks its own; write true", m.Copies)
	}
}

// validateEphemeral checks an ephemeral root's fields.
func validateEphemeral(d *doc, m *Machine) {
	r := &m.Root
	if !r.Ephemeral {
		if d.has("root.ephemeralSize") {
			d.errorf("root.ephemeralSize", "only with root.ephemeral: true")
		}
		return
	}
	if d.has("root.ephemeralSize") && r.EphemeralSize < 1<<20 {
		d.errorf("root.ephemeralSize", "%s is too small for a machine's writes: give at least 1M", r.EphemeralSize)
	}
	if r.Strategy != "" && r.Strategy != RootAuto && r.Strategy != RootOverlay {
		d.errorf("root.strategy", "%s: an ephemeral root is always an overlay over the image; remove strategy", r.Strategy)
	}
	if d.has("root.onImageChange") {
		d.errorf("root.onImageChange", "an ephemeral root is made from the image at every start: there is no root to keep or recreate; remove it")
	}
	if len(m.Files) > 0 {
		d.errorf("files", "files are written into a root before its first boot, and an ephemeral machine has no root of its own: give them to the image, or as credentials")
	}
}

// expandCopies replaces every template among entries by its copies, in
// order, each a machine of its own with the template's document (so that its
// errors point at the template). A copy shares the template's slices and
// maps: defaults fill them the same way for every copy, and nothing changes a
// defaulted definition afterwards.
func expandCopies(entries []*entry) []*entry {
	out := entries[:0:0]
	for _, e := range entries {
		m := e.machine
		// A template with errors makes no copies: its errors are told once,
		// not again for each copy by the checks between machines.
		if m == nil || m.Copies < 1 || m.Copies > MaxCopies || len(e.d.bad) > 0 {
			out = append(out, e)
			continue
		}
		for i := 1; i <= m.Copies; i++ {
			c := *m
			c.Name, c.Copies, c.Template, c.Copy = CopyName(m.Name, i), 0, m.Name, i
			ce := *e
			ce.machine = &c
			out = append(out, &ce)
		}
	}
	return out
}

// copyClash is the message for a machine name made twice when a copy is
// involved: at the template's copies field, or at the machine's name.
func copyClash(e, first *entry) (field, msg string) {
	name := e.name()
	switch {
	case e.machine.Template != "":
		return "copies", fmt.Sprintf("copy %d of template %q is machine %q, which is already defined at %s:%d%s", e.machine.Copy, e.machine.Template, name, first.d.file, first.d.start.line, madeBy(first))
	default:
		return "name", fmt.Sprintf("Machine %q is already defined at %s:%d%s", name, first.d.file, first.d.start.line, madeBy(first))
	}
}

// madeBy says which template made a machine, if one did.
func madeBy(e *entry) string {
	if e.machine == nil || e.machine.Template == "" {
		return ""
	}
	return fmt.Sprintf(" (copy %d of template %q)", e.machine.Copy, e.machine.Template)
}
