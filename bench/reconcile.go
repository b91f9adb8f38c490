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
	busybox, err := testenv.BusyboxGuestDir()
	if err != nil {
		return nil, fmt.Errorf("the busybox guest: %w", err)
	}
	work, err := os.MkdirTemp("/var/tmp", "berth-bench-reconcile-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := buildBinaries(work, "berth", "berthd"); err != nil {
		return nil, err
	}
	netns := "berth-bench-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", netns).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", netns).Run()
	_ = exec.Command("ip", "-n", netns, "link", "set", "lo", "up").Run()

	paths := config.Paths{StateDir: filepath.Join(work, "state"), RuntimeDir: filepath.Join(work, "run"), LogDir: filepath.Join(work, "log")}
	paths.Socket = filepath.Join(paths.RuntimeDir, "berthd.sock")
	cfgPath := filepath.Join(work, "berthd.yaml")
	cfg := fmt.Sprintf("stateDir: %s\nruntimeDir: %s\nlogDir: %s\nresync: 1h\nparallelism: 8\n", paths.StateDir, paths.RuntimeDir, paths.LogDir)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(work, "berthd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	daemon := exec.Command("nsenter", "--net=/run/netns/"+netns, "--", filepath.Join(work, "berthd"), "--config", cfgPath)
	daemon.Stdout, daemon.Stderr = logf, logf
	daemon.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := daemon.Start(); err != nil {
		return nil, err
	}
	ctx := context.Background()
	var ctl *api.Client
	for i := 0; ; i++ {
		if ctl, err = api.Dial(ctx, paths.Socket); err == nil {
			break
		}
		if i > 200 {
			return nil, fmt.Errorf("berthd did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer func() {
		// Forget the definitions: every machine stops, the bridge and table go.
		_, _ = ctl.Apply(ctx, api.ApplyRequest{Path: filepath.Join(work, "defs"), Forget: true})
		_ = daemon.Process.Signal(syscall.SIGTERM)
		_, _ = daemon.Process.Wait()
	}()

	defs := filepath.Join(work, "defs")
	if err := os.MkdirAll(defs, 0o755); err != nil {
		return nil, err
	}
	write := func(n int) error {
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: berth/v1\nkind: Image\nname: bb\ndirectory: %s\n---\napiVersion: berth/v1\nkind: Network\nname: bench\nsubnet: 10.96.0.0/22\n", busybox)
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "---\napiVersion: berth/v1\nkind: Machine\nname: rb%d-%d\nimage: bb\nnetwork: {name: bench, ports: [\"%d:80\"]}\nresources: {memoryMax: 32M, pidsMax: 64}\n", i, os.Getpid(), 20000+i)
		}
		return os.WriteFile(filepath.Join(defs, "machines.yaml"), []byte(b.String()), 0o644)
	}
	apply := func() (time.Duration, *api.ApplyResult, error) {
		start := time.Now()
		res, err := ctl.Apply(ctx, api.ApplyRequest{Path: defs})
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

	// 20 machines: berthd's memory.
	if err := write(rssMachines); err != nil {
		return nil, err
	}
	if _, _, err := apply(); err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Second)
	rssDaemon := rssKB(daemon.Process.Pid)
	var supRSS []float64
	ents, _ := os.ReadDir(filepath.Join(paths.RuntimeDir, "machines"))
	for _, e := range ents {
		var st struct {
			SupervisorPID int `json:"supervisorPid"`
		}
		if b, err := os.ReadFile(filepath.Join(paths.RuntimeDir, "machines", e.Name(), "state.json")); err == nil && json.Unmarshal(b, &st) == nil {
			supRSS = append(supRSS, float64(rssKB(st.SupervisorPID)))
		}
	}

	// 100 machines: the no-op reconcile.
	if err := write(reconcileMachines); err != nil {
		return nil, err
	}
	startAll := time.Now()
	if _, _, err := apply(); err != nil {
		return nil, err
	}
	started := time.Since(startAll)
	var noop []float64
	for i := 0; i < reconcileRuns; i++ {
		d, res, err := apply()
		if err != nil {
			return nil, err
		}
		if len(res.Results) != 0 {
			return nil, fmt.Errorf("a reconcile after apply was not a no-op: %v", res.Results)
		}
		noop = append(noop, float64(d.Microseconds())/1000)
	}
	slices.Sort(noop)
	slices.Sort(supRSS)
	// berthd logs each pass's phases at debug level (BERTH_LOG_LEVEL=debug).
	if b, err := os.ReadFile(filepath.Join(work, "berthd.log")); err == nil {
		var last string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "reconcile pass") {
				last = l
			}
		}
		if last != "" {
			fmt.Println("   last pass:", last[strings.Index(last, "load="):])
		}
	}
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

// rssKB is a process's resident set in KiB (VmRSS), 0 when unknown.
func rssKB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
