// Package supervisor is a detached machine supervisor's side of berth: the
// re-executed stage that runs one machine for berthd (container.Supervise with
// berth's wiring), and what joins the leaf packages inside that process — the
// machine root's lock (rootfs), the network attached from outside before the
// guest's init runs and the [::1] port-forward relay (netconf), the systemd
// scope as the cgroup driver and systemd-machined's registration (units).
// machined starts a supervisor with Spawn and reads what it left with
// ReadWiring and ReadSystemdStop; machined is never linked into this job.
package supervisor
