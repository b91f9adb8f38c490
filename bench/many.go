package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berthd/berth/internal/revert"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/spec"
)

func init() {
	register("many", "N Debian 12 machines at once (BENCH_MANY_N, default 20): berthd's one apply to all running and berth stop of all, beside N parallel systemd-nspawn -b and N LXC containers; manager memory per machine (RSS, PSS)", benchMany)
}

// manyN is the number of machines started together (BENCH_MANY_N
// overrides); manyRuns the number of measured runs (BENCH_MANY_RUNS).
var (
	manyN    = envInt("BENCH_MANY_N", 20, 1)
	manyRuns = envInt("BENCH_MANY_RUNS", 3, 1)
	// manyPerf, when set (BENCH_MANY_PERF=DIR), is where a system-wide
	// perf profile of each start and each stop goes (MANAGER-up-RUN.data,
	// MANAGER-down-RUN.data): what the host spends its CPU on while N
	// machines start or end. perf's own cost is in those runs' figures.
	manyPerf = os.Getenv("BENCH_MANY_PERF")
)

// The managers compared, in the order they take turns in each run.
var manyManagers = []struct{ key, label, ready string }{
	{"berth", "berthd (one apply)", "state running: the guest's READY=1 to its supervisor"},
	{"nspawn", "systemd-nspawn -b", "the guest's READY=1, passed on by --notify-ready=yes"},
	{"lxc", "lxc-start -d", "the guest's READY=1 on a socket bound into it ($NOTIFY_SOCKET)"},
}

// benchMany starts manyN machines of the cached Debian 12 guest together,
// under each manager in turn, manyRuns times, and reports medians:
//
//   - up: from the first start request to every guest's READY=1 (systemd
//     sends it once startup finished, as is-system-running says running);
//     berth: one apply through berthd's API declaring all machines, until
//     the last READY=1 its supervisor recorded (List, looked at every
//     250 ms, shows all running); nspawn: manyN `systemd-nspawn -b` started at
//     once, each on its own copy of the guest; LXC: manyN `lxc-start -d`
//     at once, each on its own copy;
//   - down: stop all at once until every manager process is gone (berth:
//     `berth stop` of each through the API, then every supervisor; nspawn:
//     SIGTERM; LXC: lxc-stop, then every monitor);
//   - memory per machine: RSS and PSS of each machine's manager process
//     (berth's supervisor, systemd-nspawn, LXC's "[lxc monitor]") a second
//     after all are up.
//
// The first run starts every machine for the first time (berth makes its
// roots, the copies were never booted); later runs start them again. After
// each start the guests' is-system-running is checked. None has a network
// but loopback (berth's none, nspawn --private-network, LXC's empty).
func benchMany() (map[string]any, error) {
	r := revert.New()
	defer r.Fail()
	l, err := startManyLab(r)
	if err != nil {
		return nil, err
	}
	res := map[string]*manySeries{}
	for _, m := range manyManagers {
		res[m.key] = &manySeries{states: map[string]int{}}
	}
	for i := 1; i <= manyRuns; i++ {
		if err := l.runBerth(i, res["berth"]); err != nil {
			return nil, fmt.Errorf("berthd run %d: %w", i, err)
		}
		if err := l.runNspawn(i, res["nspawn"]); err != nil {
			return nil, fmt.Errorf("nspawn run %d: %w", i, err)
		}
		if l.lxc != nil {
			if err := l.runLXC(i, res["lxc"]); err != nil {
				return nil, fmt.Errorf("lxc run %d: %w", i, err)
			}
		}
	}
	return l.figures(res), nil
}

// manySeries is one manager's measured runs: the times of each run, the
// memory of each machine in each run, the guests' states seen.
type manySeries struct {
	up, down, rss, pss []float64
	// cpu is the host's busy CPU time from the first start to all up, in
	// seconds: what starting N machines costs, managers and guests together.
	cpu    []float64
	states map[string]int
}

// manyLab is one run of the suite: a berthd (the reconcile suite's lab,
// berthd's default parallelism), a copy of the guest for each nspawn
// machine, and LXC's containers when LXC is installed.
type manyLab struct {
	*reconcileLab
	cache string
	names []string // berth's machines
	cg    string   // nspawn's cgroups (unified and name=systemd)
	roots []string // nspawn's copies
	lxc   *lxcLab  // nil: LXC is not installed
	// berthdRSS is berthd's own RSS in each run, all machines up (KiB).
	berthdRSS []float64
}

func startManyLab(r *revert.Reverter) (*manyLab, error) {
	cache, err := testenv.DebianGuestDir()
	if err != nil {
		return nil, fmt.Errorf("the Debian 12 guest: %w", err)
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		return nil, errors.New("systemd-nspawn is not installed (hack/deps.sh installs it)")
	}
	rl, err := startBerthdLab(r, "many", "")
	if err != nil {
		return nil, err
	}
	pid := strconv.Itoa(os.Getpid())
	l := &manyLab{reconcileLab: rl, cache: cache, cg: "berth-bench-many-" + pid}
	r.Add(func() { removeCgroups(l.cg) })
	for i := range manyN {
		l.names = append(l.names, fmt.Sprintf("many%d-%s", i, pid))
		l.roots = append(l.roots, filepath.Join(l.work, "nspawn", strconv.Itoa(i)))
	}
	if _, err := exec.LookPath("lxc-start"); err == nil {
		if l.lxc, err = newLXCLab(r, l.work, "berth-bench-many-"+pid+"-lxc", manyN); err != nil {
			return nil, err
		}
	}
	trees := slices.Concat(l.roots, l.lxcRoots())
	fmt.Printf("   %d machines; copying the guest %d times (nspawn's and LXC's roots) …\n", manyN, len(trees))
	if err := copyAll(cache, trees); err != nil {
		return nil, err
	}
	// berthd makes its image of the guest first, on its own: the figures
	// are the machines'.
	if err := l.writeMany(""); err != nil {
		return nil, err
	}
	if _, _, err := l.apply(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *manyLab) lxcRoots() []string {
	if l.lxc == nil {
		return nil
	}
	return l.lxc.roots
}

// copyAll copies src to each of dsts, two at a time.
func copyAll(src string, dsts []string) error {
	errs := make([]error, len(dsts))
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for i, d := range dsts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := os.MkdirAll(filepath.Dir(d), 0o755); err != nil {
				errs[i] = err
				return
			}
			errs[i] = copyTree(src, d)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writeMany declares the guest as an image and, unless state is "", the
// lab's machines on it in that state, with no network (berth's default).
func (l *manyLab) writeMany(state spec.State) error {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: berth/v1\nkind: Image\nname: deb\ndirectory: %s\n", l.cache)
	if state != "" {
		for _, n := range l.names {
			fmt.Fprintf(&b, "---\napiVersion: berth/v1\nkind: Machine\nname: %s\nimage: deb\nstate: %s\n", n, state)
		}
	}
	return os.WriteFile(filepath.Join(l.defs(), "machines.yaml"), []byte(b.String()), 0o644)
}

// runBerth declares the machines and applies once, waits until all are
// running, samples their supervisors, stops all through the API and waits
// for every supervisor to be gone; then declares them stopped and releases
// their holds, so that the next run's apply starts them again.
func (l *manyLab) runBerth(run int, s *manySeries) error {
	if err := l.writeMany(spec.StateRunning); err != nil {
		return err
	}
	endProfile := profile(fmt.Sprintf("berth-up-%d", run))
	t0, busy0 := time.Now(), hostBusy()
	if _, _, err := l.apply(); err != nil {
		endProfile()
		return err
	}
	applied := time.Since(t0)
	last, err := l.waitRunning(manyN, 2*time.Minute, 250*time.Millisecond)
	cpu := hostBusy() - busy0
	endProfile()
	if err != nil {
		return err
	}
	up := last.Sub(t0)
	time.Sleep(time.Second)
	list, err := l.ctl.List(l.ctx)
	if err != nil {
		return err
	}
	var sups, leaders []int
	for _, m := range list {
		if m.State == api.StateRunning {
			sups, leaders = append(sups, m.SupervisorPID), append(leaders, m.LeaderPID)
		}
	}
	s.sample(sups)
	l.berthdRSS = append(l.berthdRSS, float64(rssKB(l.daemon.Process.Pid)))
	s.check(leaders)
	endProfile = profile(fmt.Sprintf("berth-down-%d", run))
	t1 := time.Now()
	if err := stopAll(l.ctx, l.ctl, l.names); err != nil {
		endProfile()
		return err
	}
	verbs := time.Since(t1)
	err = waitGone(sups, time.Minute)
	down := time.Since(t1)
	endProfile()
	if err != nil {
		return fmt.Errorf("supervisors: %w", err)
	}
	s.add(up, down, cpu)
	fmt.Printf("   run %d %-20s up %6.2f s (apply returned at %.2f s, CPU %.2f s)   down %6.2f s (the stops returned at %.2f s)\n",
		run, "berthd:", up.Seconds(), applied.Seconds(), cpu, down.Seconds(), verbs.Seconds())
	if err := l.writeMany(spec.StateStopped); err != nil {
		return err
	}
	if _, _, err := l.apply(); err != nil {
		return err
	}
	return l.verbAll("release")
}

// stopAll stops the named machines through berthd's API, all at once, as
// `berth stop NAME…` does, and returns once every one has stopped (each
// stop returns when its machine has ended); the errors name their machines.
func stopAll(ctx context.Context, ctl *api.Client, names []string) error {
	return verbAll(ctx, ctl, names, "stop")
}

func (l *manyLab) verbAll(verb string) error { return verbAll(l.ctx, l.ctl, l.names, verb) }

// verbAll runs verb on all of names in one request, as `berth stop a b c`
// does: berthd acts on them together.
func verbAll(ctx context.Context, ctl *api.Client, names []string, verb string) error {
	outs, err := ctl.Verbs(ctx, api.VerbRequest{Verb: verb, Names: names})
	if err != nil {
		return fmt.Errorf("berth %s: %w", verb, err)
	}
	var errs []error
	for _, o := range outs {
		if o.Error != "" {
			errs = append(errs, fmt.Errorf("berth %s %s: %s", verb, o.Machine, o.Error))
		}
	}
	return errors.Join(errs...)
}

// runNspawn starts manyN systemd-nspawn -b at once, each on its own copy
// in a cgroup of its own, as the boot suite runs one, waits for every
// READY=1, samples them, then sends SIGTERM to all and waits for every exit.
func (l *manyLab) runNspawn(run int, s *manySeries) error {
	cg := fmt.Sprintf("%s/run%d", l.cg, run)
	defer removeCgroups(cg)
	var bl bootLab // command needs none of its fields for nspawn
	runs := make([]*notifiedRun, 0, manyN)
	defer func() {
		for _, n := range runs {
			n.close()
		}
	}()
	endProfile := profile(fmt.Sprintf("nspawn-up-%d", run))
	t0, busy0 := time.Now(), hostBusy()
	for i, root := range l.roots {
		name := fmt.Sprintf("many-ns%d", i)
		n, err := startNotified(bl.command(vNspawn, root, name, cg+"/"+strconv.Itoa(i)),
			filepath.Join(l.work, fmt.Sprintf("nspawn-run%d-%d.out", run, i)))
		if err != nil {
			endProfile()
			return err
		}
		runs = append(runs, n)
	}
	// A machine that never reports READY=1 (50 at once: some time out) is
	// counted and left out of the figures, not the end of the suite.
	var ok []*notifiedRun
	for i, n := range runs {
		if err := n.awaitReady(); err != nil {
			s.notReady(fmt.Sprintf("nspawn machine %d", i), err)
			continue
		}
		ok = append(ok, n)
	}
	up, cpu := time.Since(t0), hostBusy()-busy0
	endProfile()
	if len(ok) == 0 {
		return errors.New("no nspawn machine reported READY=1")
	}
	time.Sleep(time.Second)
	var pids, leaders []int
	for _, n := range ok {
		pid := n.cmd.Process.Pid // sh exec'd systemd-nspawn
		pids, leaders = append(pids, pid), append(leaders, firstChild(pid))
	}
	s.sample(pids)
	s.check(leaders)
	endProfile = profile(fmt.Sprintf("nspawn-down-%d", run))
	t1 := time.Now()
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	for i, n := range runs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = n.stop() }()
	}
	wg.Wait()
	down := time.Since(t1)
	endProfile()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.add(up, down, cpu)
	fmt.Printf("   run %d %-20s up %6.2f s (CPU %.2f s)   down %6.2f s\n", run, "systemd-nspawn:", up.Seconds(), cpu, down.Seconds())
	return nil
}

// runLXC starts manyN LXC containers at once (lxc-start -d each), each on
// its own copy, waits for every guest's READY=1, samples their monitors,
// then lxc-stops all at once and waits for every monitor to be gone.
func (l *manyLab) runLXC(run int, s *manySeries) error {
	x := l.lxc
	readies := make([]<-chan error, manyN)
	for i := range manyN {
		if err := x.configure(i); err != nil {
			return err
		}
		sock, ready, err := listenNotify(x.notifySocket(i))
		if err != nil {
			return err
		}
		defer sock.Close()
		readies[i] = ready
	}
	t0, busy0 := time.Now(), hostBusy()
	errs := make([]error, manyN)
	var wg sync.WaitGroup
	for i := range manyN {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = x.start(i) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var ok []int
	for i, ready := range readies {
		if err := <-ready; err != nil {
			s.notReady("LXC container "+x.name(i), err)
			continue
		}
		ok = append(ok, i)
	}
	if len(ok) == 0 {
		return errors.New("no LXC container reported READY=1")
	}
	up, cpu := time.Since(t0), hostBusy()-busy0
	time.Sleep(time.Second)
	var inits, monitors []int
	for _, i := range ok {
		init, mon, err := x.pids(i)
		if err != nil {
			return err
		}
		inits, monitors = append(inits, init), append(monitors, mon)
	}
	s.sample(monitors)
	s.check(inits)
	t1 := time.Now()
	for _, i := range ok {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = x.stop(i) }()
	}
	wg.Wait()
	stopped := time.Since(t1)
	for i := range manyN {
		if !slices.Contains(ok, i) {
			_ = x.stop(i) // gave no READY=1: may be gone already
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := waitGone(monitors, time.Minute); err != nil {
		return fmt.Errorf("monitors: %w", err)
	}
	down := time.Since(t1)
	s.add(up, down, cpu)
	fmt.Printf("   run %d %-20s up %6.2f s (CPU %.2f s)   down %6.2f s (lxc-stop returned at %.2f s)\n", run, "LXC:", up.Seconds(), cpu, down.Seconds(), stopped.Seconds())
	return nil
}

// firstChild is the first child of process pid (nspawn's: the guest's
// init), 0 when it has none.
func firstChild(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// notReady counts a machine that gave no READY=1 among the guests' states,
// and says which and why.
func (s *manySeries) notReady(which string, err error) {
	s.states["no READY=1"]++
	msg, _, _ := strings.Cut(err.Error(), "\n")
	fmt.Printf("   %s: %s\n", which, msg)
}

// add records one run's times, in seconds to the millisecond, and its CPU
// seconds.
func (s *manySeries) add(up, down time.Duration, cpu float64) {
	s.up, s.down = append(s.up, up.Round(time.Millisecond).Seconds()), append(s.down, down.Round(time.Millisecond).Seconds())
	s.cpu = append(s.cpu, round2(cpu))
}

// hostBusy is the CPU time the host has spent busy since it booted, in
// seconds: /proc/stat's user, nice, system, irq, softirq and steal, all CPUs
// (USER_HZ is 100 on Linux).
func hostBusy() float64 {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var t float64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		if i < len(f) {
			v, _ := strconv.ParseFloat(f[i], 64)
			t += v
		}
	}
	return t / 100
}

// sample records the RSS and PSS of each of pids, in KiB.
func (s *manySeries) sample(pids []int) {
	for _, p := range pids {
		s.rss = append(s.rss, float64(rssKB(p)))
		s.pss = append(s.pss, float64(pssKB(p)))
	}
}

// check asks each guest (by its init's PID) for systemctl
// is-system-running and counts the answers: every one should be running.
func (s *manySeries) check(inits []int) {
	for _, p := range inits {
		state := "no init"
		if p > 0 {
			out, _ := exec.Command("nsenter", "-t", strconv.Itoa(p), "-a", "-r", "-w", "systemctl", "is-system-running").Output()
			if state = strings.TrimSpace(string(out)); state == "" {
				state = "no answer"
			}
		}
		s.states[state]++
	}
}

// waitGone waits until none of pids runs (gone, or a zombie left to its
// parent), for at most limit.
func waitGone(pids []int, limit time.Duration) error {
	return testenv.Poll(limit, func() error {
		for _, p := range pids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
			if err != nil {
				continue
			}
			// pid (comm) S …: the state follows the last ')'.
			if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] != "Z" {
				return fmt.Errorf("process %d still runs", p)
			}
		}
		return nil
	})
}

// figures prints the table of medians and the ratios, and returns them.
func (l *manyLab) figures(res map[string]*manySeries) map[string]any {
	figs := map[string]any{"machines": manyN, "runs": manyRuns,
		"conditions": "2 cores, shared with other test runs; medians; Debian 12 minbase+systemd guest, no network but loopback; berthd with its default configuration; run 1 is every machine's first start"}
	kib := func(v float64) string { return fmt.Sprintf("%.1f MiB", v/1024) }
	fmt.Printf("   %d machines at once, medians of %d runs:\n", manyN, manyRuns)
	fmt.Printf("   %-22s %12s %12s %12s %14s %14s   %s\n", "", "all up s", "CPU s (up)", "all down s", "RSS/machine", "PSS/machine", "guests (is-system-running)")
	for _, m := range manyManagers {
		s := res[m.key]
		if m.key == "lxc" && l.lxc == nil {
			figs["lxc"] = "not installed"
			fmt.Printf("   %-22s %12s %12s %12s %14s %14s\n", m.label, "not installed", "", "", "", "")
			continue
		}
		figs[m.key+"_up_s"], figs[m.key+"_down_s"], figs[m.key+"_up_cpu_s"] = round2(median(s.up)), round2(median(s.down)), round2(median(s.cpu))
		figs[m.key+"_up_s_all"], figs[m.key+"_down_s_all"] = s.up, s.down
		figs[m.key+"_rss_kib"], figs[m.key+"_pss_kib"] = round(median(s.rss)), round(median(s.pss))
		figs[m.key+"_guests"] = s.states
		figs[m.key+"_readiness"] = m.ready
		fmt.Printf("   %-22s %12.2f %12.2f %12.2f %14s %14s   %v\n", m.label, median(s.up), median(s.cpu), median(s.down), kib(median(s.rss)), kib(median(s.pss)), s.states)
	}
	figs["berthd_rss_kib"] = round(median(l.berthdRSS))
	fmt.Printf("   %-22s %12s %12s %14s\n", "berthd itself", "", "", kib(median(l.berthdRSS)))
	for _, den := range manyManagers[1:] {
		if den.key == "lxc" && l.lxc == nil {
			fmt.Printf("   %-22s %12s\n", "berth / lxc", "(LXC not installed)")
			continue
		}
		b, d := res["berth"], res[den.key]
		q := map[string]float64{
			"up":     median(b.up) / median(d.up),
			"up_cpu": median(b.cpu) / median(d.cpu),
			"down":   median(b.down) / median(d.down),
			"rss":    median(b.rss) / median(d.rss),
			"pss":    median(b.pss) / median(d.pss),
		}
		for k, v := range q {
			figs[k+"_ratio_"+den.key] = round2(v)
		}
		fmt.Printf("   %-22s %12.2f %12.2f %12.2f %14.2f %14.2f\n", "berth / "+den.key, q["up"], q["up_cpu"], q["down"], q["rss"], q["pss"])
	}
	fmt.Println("   readiness:")
	for _, m := range manyManagers {
		fmt.Printf("     %-8s %s\n", m.key, m.ready)
	}
	return figs
}
