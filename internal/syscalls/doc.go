// Package syscalls is the data of berth's system call filter: the kernel's
// system call tables of the architectures berth filters, the named groups
// (systemd's, as nspawn uses them), and the default allow-list with the
// reason beside each entry. spec validates definitions against it; container
// builds the machine's seccomp program from it.
package syscalls
