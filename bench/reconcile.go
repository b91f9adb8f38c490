package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthd/berth/internal/revert"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/machined/config"
)

func init() {
	register("reconcile", "berthd: a no-op reconcile over 100 declared, running machines, and berthd's RSS with 20 running machines", benchReconcile)
}

const (
	reconcileMachines = 100
	reconcileRuns     = 15
	rssMachines       = 20
)

// benchReconcile runs a real berthd (built from this tree) in a network
// namespace of its own with busybox-init machines on one bridge, and measures:
//
//   - the wall time of a no-op reconcile (load the definitions, observe every
//     supervisor, root, bridge, veth and the nftables table, plan nothing),
//     asked for through the API like `berth apply` — with 100 declared, running
//     machines; median of reconcileRuns;
//   - berthd's VmRSS with rssMachines running machines (and the per-machine
//     supervisor RSS beside it).
func benchReconcile() (map[string]any, error) {
	r := revert.New()
	defer r.Fail()
	l, err := startReconcileLab(r)
	if err != nil {
		return nil, err
	}
	rssDaemon, supRSS, err := l.measureRSS()
	if err != nil {
		return nil, err
	}
	started, noop, err := l.measureNoop()
	if err != nil {
		return nil, err
	}
	slices.Sort(noop)
	slices.Sort(supRSS)
	l.printLastPass()
	figs := map[string]any{
		"machines_noop":         reconcileMachines,
		"noop_reconcile_ms_p50": noop[len(noop)/2],
		"noop_reconcile_ms_min": noop[0],
		"noop_reconcile_ms_max": noop[len(noop)-1],
		"start_80_more_s":       started.Seconds(),
		"machines_rss":          rssMachines,
		"berthd_rss_kb":         rssDaemon,
		"supervisor_rss_kb_p50": median(supRSS),
	}
	fmt.Printf("   no-op reconcile, %d running machines: median %.1f ms (min %.1f, max %.1f; target < 100 ms)\n",
		reconcileMachines, noop[len(noop)/2], noop[0], noop[len(noop)-1])
	fmt.Printf("   starting %d more machines in one apply: %.2f s\n", reconcileMachines-rssMachines, started.Seconds())
	fmt.Printf("   berthd RSS with %d running machines: %.1f MB; each supervisor: %.1f MB (median)\n",
		rssMachines, float64(rssDaemon)/1024, median(supRSS)/1024)
	return figs, nil
}

// reconcileLab is a berthd built from this tree, running in a network
// namespace of its own with its state, runtime and log directories and its
// definitions in a work directory.
type reconcileLab struct {
	ctx     context.Context
	busybox string // the guest's root, the machines' image
	work    string
	paths   config.Paths
	daemon  *exec.Cmd
	ctl     *api.Client
}

// startReconcileLab builds berth and berthd into a new work directory and
// starts berthd in a new network namespace, with up to 8 machines started at
// once; r stops it again, its machines forgotten first, and removes the
// namespace and the directory.
func startReconcileLab(r *revert.Reverter) (*reconcileLab, error) {
	return startBerthdLab(r, "reconcile", "parallelism: 8\n")
}

// startBerthdLab is startReconcileLab for suite, with extra (YAML lines)
// added to berthd's configuration file.
func startBerthdLab(r *revert.Reverter, suite, extra string) (*reconcileLab, error) {
	busybox, err := testenv.BusyboxGuestDir()
	if err != nil {
		return nil, fmt.Errorf("the busybox guest: %w", err)
	}
	work, remove, err := newWorkDir(suite, "berth", "berthd")
	if err != nil {
		return nil, err
	}
	r.Add(remove)
	netns := "berth-bench-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", netns).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	r.Add(func() { exec.Command("ip", "netns", "del", netns).Run() })
	_ = exec.Command("ip", "-n", netns, "link", "set", "lo", "up").Run()
	l := &reconcileLab{ctx: context.Background(), busybox: busybox, work: work}
	if err := l.startDaemon(r, netns, extra); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(l.defs(), 0o755); err != nil {
		return nil, err
	}
	return l, nil
}

// startDaemon starts berthd in netns, its log in the work directory, and
// waits for its API; r forgets the definitions (every machine stops, the
// bridge and table go) and stops berthd. extra is added to its
// configuration file.
func (l *reconcileLab) startDaemon(r *revert.Reverter, netns, extra string) error {
	l.paths = config.Paths{StateDir: filepath.Join(l.work, "state"), RuntimeDir: filepath.Join(l.work, "run"), LogDir: filepath.Join(l.work, "log")}
	l.paths.Socket = filepath.Join(l.paths.RuntimeDir, "berthd.sock")
	cfgPath := filepath.Join(l.work, "berthd.yaml")
	cfg := fmt.Sprintf("stateDir: %s\nruntimeDir: %s\nlogDir: %s\nresync: 1h\n%s", l.paths.StateDir, l.paths.RuntimeDir, l.paths.LogDir, extra)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(l.work, "berthd.log"))
	if err != nil {
		return err
	}
	r.Add(func() { logf.Close() })
	l.daemon = exec.Command("nsenter", "--net=/run/netns/"+netns, "--", filepath.Join(l.work, "berthd"), "--config", cfgPath)
	l.daemon.Stdout, l.daemon.Stderr = logf, logf
	l.daemon.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := l.daemon.Start(); err != nil {
		return err
	}
	r.Add(func() {
		_ = l.daemon.Process.Signal(syscall.SIGTERM)
		_, _ = l.daemon.Process.Wait()
	})
	for i := 0; ; i++ {
		if l.ctl, err = api.Dial(l.ctx, l.paths.Socket); err == nil {
			break
		}
		if i > 200 {
			return fmt.Errorf("berthd did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.Add(func() { _, _ = l.ctl.Apply(l.ctx, api.ApplyRequest{Path: l.defs(), Forget: true}) })
	return nil
}

// defs is the directory of the definitions berthd is asked to apply.
func (l *reconcileLab) defs() string { return filepath.Join(l.work, "defs") }

// write declares n busybox machines, each with a port forward, on one network.
func (l *reconcileLab) write(n int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: berth/v1\nkind: Image\nname: bb\ndirectory: %s\n---\napiVersion: berth/v1\nkind: Network\nname: bench\nsubnet: 10.96.0.0/22\n", l.busybox)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "---\napiVersion: berth/v1\nkind: Machine\nname: rb%d-%d\nimage: bb\nnetwork: {name: bench, ports: [\"%d:80\"]}\nresources: {memoryMax: 32M, pidsMax: 64}\n", i, os.Getpid(), 20000+i)
	}
	return os.WriteFile(filepath.Join(l.defs(), "machines.yaml"), []byte(b.String()), 0o644)
}

// apply asks berthd to apply the definitions, as `berth apply` does, and
// times it; an action that failed is an error.
func (l *reconcileLab) apply() (time.Duration, *api.ApplyResult, error) {
	start := time.Now()
	res, err := l.ctl.Apply(l.ctx, api.ApplyRequest{Path: l.defs()})
	d := time.Since(start)
	if err != nil {
		return d, res, err
	}
	for _, r := range res.Results {
		if r.Error != "" {
			return d, res, fmt.Errorf("%s: %s", r.Action, r.Error)
		}
	}
	return d, res, nil
}

// measureRSS starts rssMachines machines and reads berthd's RSS and each
// supervisor's, in KiB.
func (l *reconcileLab) measureRSS() (daemon int, supervisors []float64, err error) {
	if err := l.write(rssMachines); err != nil {
		return 0, nil, err
	}
	if _, _, err := l.apply(); err != nil {
		return 0, nil, err
	}
	time.Sleep(2 * time.Second)
	daemon = rssKB(l.daemon.Process.Pid)
	ents, _ := os.ReadDir(filepath.Join(l.paths.RuntimeDir, "machines"))
	for _, e := range ents {
		var st struct {
			SupervisorPID int `json:"supervisorPid"`
		}
		if b, err := os.ReadFile(filepath.Join(l.paths.RuntimeDir, "machines", e.Name(), "state.json")); err == nil && json.Unmarshal(b, &st) == nil {
			supervisors = append(supervisors, float64(rssKB(st.SupervisorPID)))
		}
	}
	return daemon, supervisors, nil
}

// measureNoop starts the machines up to reconcileMachines in one apply, then
// times reconcileRuns applies that must change nothing (in ms).
func (l *reconcileLab) measureNoop() (started time.Duration, noop []float64, err error) {
	if err := l.write(reconcileMachines); err != nil {
		return 0, nil, err
	}
	startAll := time.Now()
	if _, _, err := l.apply(); err != nil {
		return 0, nil, err
	}
	started = time.Since(startAll)
	for i := 0; i < reconcileRuns; i++ {
		d, res, err := l.apply()
		if err != nil {
			return 0, nil, err
		}
		if len(res.Results) != 0 {
			return 0, nil, fmt.Errorf("a reconcile after apply was not a no-op: %v", res.Results)
		}
		noop = append(noop, ms(d))
	}
	return started, noop, nil
}

// printLastPass prints the phase timings of berthd's last reconcile pass,
// which it logs at debug level (BERTH_LOG_LEVEL=debug).
func (l *reconcileLab) printLastPass() {
	b, err := os.ReadFile(filepath.Join(l.work, "berthd.log"))
	if err != nil {
		return
	}
	var last string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "reconcile pass") {
			last = line
		}
	}
	if last != "" {
		fmt.Println("   last pass:", last[strings.Index(last, "load="):])
	}
}
