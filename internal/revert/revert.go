// Package revert is berth's one way of undoing a multi-step setup when it
// fails part-way (Incus's shared/revert pattern):
//
//	r := revert.New()
//	defer r.Fail()
//	…; r.Add(undo); …
//	r.Success()
//
// Fail runs the undo steps, last first, unless Success was called. A setup
// whose steps are to be undone in every case (a machine's supervisor tidying
// up when the machine ends) just calls Fail without Success.
package revert

// Reverter collects undo steps.
type Reverter struct {
	undo []func()
	done bool
}

// New returns an empty Reverter.
func New() *Reverter { return &Reverter{} }

// Add registers the undo of a step that succeeded.
func (r *Reverter) Add(f func()) { r.undo = append(r.undo, f) }

// Success keeps everything: a later Fail does nothing.
func (r *Reverter) Success() { r.done = true }

// Fail runs the undo steps, last first, once, unless Success was called.
func (r *Reverter) Fail() {
	if r.done {
		return
	}
	r.done = true
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
}
