package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/rootfs/hold"
)

// Stage is the name of the re-executed stage that runs a detached machine
// supervisor with berth's wiring.
const Stage = "supervise"

func init() {
	container.RegisterStage(Stage, func() { container.SuperviseStage(stageHooks) })
}

// Spawn starts a detached supervisor for the machine cfg describes, with rec
// as its machine.json (a Wiring, or a type that embeds one), and returns once
// the machine's init runs (or why it did not start).
func Spawn(ctx context.Context, cfg container.Config, rec any) error {
	if err := WriteWiring(rundir.Dir(cfg.RuntimeDir), rec); err != nil {
		return fmt.Errorf("machine %q: %w", cfg.Name, err)
	}
	_, err := container.SpawnDetached(ctx, cfg, Stage)
	return err
}

// stageHooks joins the leaf packages into one detached supervisor: it holds
// the machine root's lock for the machine's whole life, attaches the network
// from outside before the guest's init runs, relays the [::1] port forwards,
// and uses the systemd scope and systemd-machined registration when the host
// runs systemd.
func stageHooks(ctx context.Context, cfg container.Config) (container.Hooks, error) {
	var h container.Hooks
	w, err := ReadWiring(rundir.Dir(cfg.RuntimeDir))
	if err != nil {
		return h, fmt.Errorf("machine %q: %w", cfg.Name, err)
	}
	// berthd.service runs with a lowered OOM score; the machines must not
	// inherit that protection from it.
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("0"), 0)
	// An ephemeral machine has no root in the state directory to lock; its
	// image's content is kept in use instead.
	switch {
	case w.StateDir != "" && w.EphemeralImage != "":
		if err := useImage(&h, cfg.Name, w.StateDir, w.EphemeralImage); err != nil {
			return h, err
		}
	case w.StateDir != "":
		if err := lockRoot(&h, cfg.Name, w.StateDir); err != nil {
			return h, err
		}
	}
	h.Network = networkHook(cfg, w)
	if w.Attachment != nil {
		loopbackProxyHooks(&h, w.Forwards)
		nameRecordHooks(&h, cfg, w)
	}
	if w.Driver == DriverSystemd {
		if err := systemdHooks(ctx, &h, cfg, w.Attachment, slog.Default()); err != nil {
			return h, err
		}
	}
	return h, nil
}

// lockRoot takes the machine root's lock for the machine's life: remove and
// clone try it to refuse a running machine. The kernel releases it when this
// process ends, however it ends; until the machine has stopped, the Stopped
// hook keeps the lock referenced (and releases it). berthd made the root; a
// root older than lock files gets its lock file here.
func lockRoot(h *container.Hooks, name, stateDir string) error {
	lock, err := hold.LockRoot(stateDir, name, "", func() error {
		if _, err := os.Stat(hold.MachineDir(stateDir, name)); err != nil {
			return fmt.Errorf("machine %q has no root in %s", name, stateDir)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("machine %q: %w", name, err)
	}
	releaseWhenStopped(h, func() { _ = lock.Unlock() })
	return nil
}

// useImage keeps an ephemeral machine's image content from removal for the
// machine's life (hold.UseImage), as lockRoot keeps a root.
func useImage(h *container.Hooks, name, stateDir, digest string) error {
	f, err := hold.UseImage(stateDir, digest)
	if err != nil {
		return fmt.Errorf("machine %q: %w", name, err)
	}
	releaseWhenStopped(h, func() { f.Close() })
	return nil
}

// releaseWhenStopped runs release once the machine has stopped, after the
// Stopped hooks before it.
func releaseWhenStopped(h *container.Hooks, release func()) {
	stopped := h.Stopped
	h.Stopped = func(ctx context.Context, st container.ExitStatus) {
		if stopped != nil {
			stopped(ctx, st)
		}
		release()
	}
}

// networkHook attaches the machine's veth (or just brings loopback up) from
// the host side, with the payload's PID, before its init runs.
func networkHook(cfg container.Config, w *Wiring) func(ctx context.Context, pid int) error {
	if cfg.NetworkMode == "host" {
		return nil
	}
	if w.Attachment == nil {
		return func(ctx context.Context, pid int) error { return netconf.SetupLoopback(ctx, pid) }
	}
	att := *w.Attachment
	return func(ctx context.Context, pid int) error {
		h, err := netconf.Open("")
		if err != nil {
			return err
		}
		defer h.Close()
		return h.Attach(ctx, pid, att)
	}
}

// loopbackProxyHooks runs the machine's [::1] port forwards (the one kind the
// kernel cannot do) in its supervisor, for as long as the machine lives.
func loopbackProxyHooks(h *container.Hooks, fwds []netconf.Forward) {
	var nh *netconf.Host
	var proxy *netconf.LoopbackProxy
	started, stopped := h.Started, h.Stopped
	h.Started = func(ctx context.Context, s container.Started) error {
		if started != nil {
			if err := started(ctx, s); err != nil {
				return err
			}
		}
		if proxy != nil {
			return nil // a reboot: the proxy goes on
		}
		var err error
		if nh, err = netconf.Open(""); err != nil {
			return err
		}
		// An idle proxy when none of the forwards needs one.
		proxy, err = nh.ProxyLoopback(ctx, fwds)
		return err
	}
	h.Stopped = func(ctx context.Context, st container.ExitStatus) {
		if proxy != nil {
			_ = proxy.Close()
		}
		if nh != nil {
			_ = nh.Close()
		}
		if stopped != nil {
			stopped(ctx, st)
		}
	}
}

// nameRecordHooks keep the machine's name record in its network's runtime
// directory (RUN/networks/NET/names/MACHINE) while the machine runs: written
// once the network hook has attached it, at every boot, and removed when
// the machine stops. The network's resolver answers from these records, so
// names follow machines with or without berthd.
func nameRecordHooks(h *container.Hooks, cfg container.Config, w *Wiring) {
	if w.Network == "" {
		return
	}
	dir := rundir.ForNetwork(rundir.Dir(cfg.RuntimeDir).RuntimeRoot(), w.Network).Names()
	att := *w.Attachment
	network := h.Network
	h.Network = func(ctx context.Context, pid int) error {
		if err := network(ctx, pid); err != nil {
			return err
		}
		rec, err := att.Record(os.Getpid())
		if err == nil {
			err = netconf.WriteNameRecord(dir, rec)
		}
		if err != nil {
			// The machine runs without its name rather than not at all.
			slog.WarnContext(ctx, "the machine's name is not published to its network's resolver", "machine", cfg.Name, "err", err)
		}
		return nil
	}
	stopped := h.Stopped
	h.Stopped = func(ctx context.Context, st container.ExitStatus) {
		if err := netconf.RemoveNameRecord(dir, cfg.Name, os.Getpid()); err != nil {
			slog.WarnContext(ctx, "remove the machine's name record", "machine", cfg.Name, "err", err)
		}
		if stopped != nil {
			stopped(ctx, st)
		}
	}
}
