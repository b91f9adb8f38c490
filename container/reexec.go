package container

// Reexec runs a re-executed stage of the berth binary (the payload's init stage)
// when the process was started as one, and never returns in that case. Every main
// that can be re-executed, and every test binary that starts machines, calls it
// first thing.
func Reexec() {}
