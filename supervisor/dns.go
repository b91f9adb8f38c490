package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/fsutil"
	"github.com/berthd/berth/internal/procstat"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/netconf"
	"github.com/berthd/berth/units"
	"golang.org/x/sys/unix"
)

// ResolverStage is the re-executed stage that runs a network's DNS resolver.
const ResolverStage = "dns"

// netDirEnv names the network's runtime directory to the resolver stage.
const netDirEnv = "_BERTH_NETWORK_DIR"

func init() {
	container.RegisterStage(ResolverStage, resolverStage)
}

// resolverFile is dns.json: the resolver's configuration and the cgroup
// driver of the host (systemd: the resolver moves into a scope of its own).
type resolverFile struct {
	netconf.ResolverConfig
	Driver string `json:"driver"`
}

// resolverPID is dns.pid: the running resolver.
type resolverPID struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

func readResolverPID(d rundir.NetDir) (resolverPID, bool) {
	var p resolverPID
	b, err := os.ReadFile(d.DNSState())
	if err != nil || json.Unmarshal(b, &p) != nil {
		return p, false
	}
	return p, procstat.Alive(p.PID, p.Start)
}

func readResolverFile(d rundir.NetDir) (resolverFile, error) {
	var f resolverFile
	b, err := os.ReadFile(d.DNSConfig())
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%s: %w", d.DNSConfig(), err)
	}
	return f, nil
}

// ResolverDrift describes how the network's resolver differs from one
// running with cfg: not running, or running with another configuration; nil
// when it runs as it should.
func ResolverDrift(runtimeDir string, cfg netconf.ResolverConfig) []string {
	d := rundir.ForNetwork(runtimeDir, cfg.Network)
	if _, alive := readResolverPID(d); !alive {
		return []string{fmt.Sprintf("the DNS resolver of network %s is not running", cfg.Network)}
	}
	if f, err := readResolverFile(d); err != nil || !reflect.DeepEqual(f.ResolverConfig, cfg) {
		return []string{fmt.Sprintf("the DNS resolver of network %s runs with an older configuration", cfg.Network)}
	}
	return nil
}

// ResolverRunning reports whether the network's resolver runs.
func ResolverRunning(runtimeDir, network string) bool {
	_, alive := readResolverPID(rundir.ForNetwork(runtimeDir, network))
	return alive
}

// EnsureResolver makes the network's resolver run with cfg: it starts one
// when none runs, and replaces one that runs with another configuration.
// The resolver is the berth binary re-executed (stage dns, `berth-dns
// NETWORK` in ps) in a session of its own and, with the systemd driver, in
// a scope of its own (berth-dns-NETWORK.scope), so that it outlives
// berthd: machines keep resolving while berthd restarts or is upgraded.
func EnsureResolver(ctx context.Context, runtimeDir string, cfg netconf.ResolverConfig, driver string) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	d := rundir.ForNetwork(runtimeDir, cfg.Network)
	if ResolverDrift(runtimeDir, cfg) == nil {
		return nil
	}
	if err := StopResolver(ctx, runtimeDir, cfg.Network); err != nil {
		return err
	}
	fail := func(err error) error { return fmt.Errorf("network %q: start the DNS resolver: %w", cfg.Network, err) }
	if err := os.MkdirAll(d.Path(), 0o755); err != nil {
		return fail(err)
	}
	b, _ := json.MarshalIndent(resolverFile{ResolverConfig: cfg, Driver: driver}, "", "  ")
	if err := fsutil.WriteFileAtomic(d.DNSConfig(), append(b, '\n'), 0o600); err != nil {
		return fail(err)
	}
	logf, err := os.OpenFile(d.DNSLog(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fail(err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	defer r.Close()
	cmd := container.StageCommand(ResolverStage, "berth-dns "+cfg.Network, netDirEnv+"="+d.Path())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fail(err)
	}
	w.Close()
	// Reap it whenever it ends, so no zombie stays behind in berthd.
	go func() { _ = cmd.Wait() }()
	stop := context.AfterFunc(ctx, func() { _ = r.SetReadDeadline(time.Now()) })
	defer stop()
	var msg bytes.Buffer
	_, _ = msg.ReadFrom(r)
	switch text := strings.TrimSpace(msg.String()); {
	case text == "ok":
		return nil
	case strings.HasPrefix(text, "error: "):
		return errors.New(strings.TrimPrefix(text, "error: "))
	case ctx.Err() != nil:
		return fail(ctx.Err())
	default:
		return fail(fmt.Errorf("it ended before it answered; see %s", d.DNSLog()))
	}
}

// StopResolver stops the network's resolver, if one runs (SIGTERM, then
// SIGKILL after five seconds), and waits until it is gone.
func StopResolver(ctx context.Context, runtimeDir, network string) error {
	d := rundir.ForNetwork(runtimeDir, network)
	p, alive := readResolverPID(d)
	if !alive {
		return nil
	}
	_ = unix.Kill(p.PID, unix.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for procstat.Alive(p.PID, p.Start) {
		if time.Now().After(deadline) {
			_ = unix.Kill(p.PID, unix.SIGKILL)
			deadline = time.Now().Add(5 * time.Second)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("network %q: stop the DNS resolver (PID %d): %w", network, p.PID, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	_ = os.Remove(d.DNSState())
	return nil
}

// RemoveNetworkDir stops the network's resolver and removes the network's
// runtime directory.
func RemoveNetworkDir(ctx context.Context, runtimeDir, network string) error {
	if err := StopResolver(ctx, runtimeDir, network); err != nil {
		return err
	}
	return os.RemoveAll(rundir.ForNetwork(runtimeDir, network).Path())
}

// StopResolvers stops the resolvers of every network under runtimeDir: what
// a test (or a teardown of the whole installation) does last.
func StopResolvers(ctx context.Context, runtimeDir string) error {
	ents, _ := os.ReadDir(filepath.Join(runtimeDir, rundir.NetworksDir))
	var errs []error
	for _, e := range ents {
		errs = append(errs, StopResolver(ctx, runtimeDir, e.Name()))
	}
	return errors.Join(errs...)
}

// resolverStage is the body of a resolver process: it takes the network's
// resolver lock (one resolver per network), moves into its own scope on a
// systemd host, serves, records its PID, and runs until SIGTERM or until
// the network's runtime directory goes.
func resolverStage() {
	// One per network, for the host's whole uptime: keep it lean, as a
	// supervisor is.
	debug.SetGCPercent(25)
	debug.SetMemoryLimit(16 << 20)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	ready := os.NewFile(3, "ready")
	report := func(msg string) {
		if ready != nil {
			_, _ = ready.WriteString(msg + "\n")
			ready.Close()
			ready = nil
		}
	}
	die := func(err error) {
		report("error: " + err.Error())
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	d := rundir.NetDir(os.Getenv(netDirEnv))
	f, err := readResolverFile(d)
	if err != nil {
		die(fmt.Errorf("network %q: DNS resolver: %w", d.Name(), err))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	lock, err := os.OpenFile(d.DNSLock(), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		die(fmt.Errorf("network %q: DNS resolver: another one runs (lock %s): %w", f.Network, d.DNSLock(), err))
	}
	defer lock.Close()

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	if f.Driver == DriverSystemd {
		if err := helperScope(ctx, units.HelperScopeName("dns", f.Network), "berth DNS resolver of network "+f.Network); err != nil {
			die(fmt.Errorf("network %q: DNS resolver: %w", f.Network, err))
		}
	}
	nh, err := netconf.Open("")
	if err != nil {
		die(err)
	}
	defer nh.Close()
	r, err := nh.ServeResolver(ctx, f.ResolverConfig, log)
	if err != nil {
		die(err)
	}
	start, _ := procstat.StartTime(os.Getpid())
	b, _ := json.Marshal(resolverPID{PID: os.Getpid(), Start: start})
	if err := fsutil.WriteFileAtomic(d.DNSState(), append(b, '\n'), 0o600); err != nil {
		r.Close()
		die(fmt.Errorf("network %q: DNS resolver: %w", f.Network, err))
	}
	report("ok")
	select {
	case <-ctx.Done():
		log.Info("resolver stopping", "network", f.Network)
	case <-r.Done():
		log.Info("resolver ended", "network", f.Network, "err", r.Err())
	}
	r.Close()
	if p, _ := readResolverPID(d); p.PID == os.Getpid() {
		_ = os.Remove(d.DNSState())
	}
}

// helperScope moves this process into a transient scope of its own.
func helperScope(ctx context.Context, unit, desc string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sd, err := units.Connect(ctx)
	if err != nil {
		return err
	}
	defer sd.Close()
	return sd.StartHelperScope(ctx, units.HelperScope{Unit: unit, Description: desc, PID: os.Getpid()})
}
