package netconf

// reverter collects the undo steps of a multi-step setup and runs them, last
// first, unless the setup reached success (Incus's shared/revert pattern):
//
//	r := new(reverter)
//	defer r.fail()
//	…; r.add(undo); …
//	r.success()
type reverter struct {
	undo []func()
	done bool
}

func (r *reverter) add(f func()) { r.undo = append(r.undo, f) }

func (r *reverter) success() { r.done = true }

func (r *reverter) fail() {
	if r.done {
		return
	}
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
}
