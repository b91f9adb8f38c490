// Package container runs one machine: the per-machine supervisor, the payload in new
// namespaces set up per systemd's Container Interface, pivot_root, the guest init as
// PID 1, the console pty, signal semantics and the cgroup drivers.
package container
