package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berthd/berth/internal/revert"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/machined/api"
)

func init() {
	register("ephemeral", "berthd: 100 ephemeral busybox and 20 ephemeral Debian machines from one template each (copies: N), time to all running and the disk and memory they use; first start of an ephemeral vs a persistent (copy) Debian machine", benchEphemeral)
}

// benchEphemeral runs a real berthd (the reconcile suite's lab) and applies
// one template at a time:
//
//   - copies: 100 of the busybox guest, root: {ephemeral: true}: the wall
//     time from apply to every copy running, the state directory's growth
//     (the roots berth made: none) and the host's memory in use;
//   - copies: 20 of the Debian systemd guest, likewise (running: the guest
//     said READY=1);
//   - one Debian machine, first start ephemeral and then persistent with
//     root.strategy copy (what systemd-nspawn --ephemeral pays on ext4 at
//     every start): apply until running.
func benchEphemeral() (map[string]any, error) {
	r := revert.New()
	defer r.Fail()
	l, err := startReconcileLab(r)
	if err != nil {
		return nil, err
	}
	debian, err := testenv.DebianGuestDir()
	if err != nil {
		return nil, fmt.Errorf("the Debian guest: %w", err)
	}
	figs := map[string]any{}
	for _, c := range []struct {
		key, image, source, root string
		copies                   int
		limit                    time.Duration
	}{
		{"busybox", "bb", l.busybox, "root: {ephemeral: true}\n", 100, 5 * time.Minute},
		{"debian", "deb", debian, "root: {ephemeral: true}\n", 20, 5 * time.Minute},
		// The same under the same load, persistent (overlay roots made at
		// the first start), for comparison.
		{"debian_persistent", "deb", debian, "root: {strategy: overlay}\n", 20, 5 * time.Minute},
	} {
		// The image is built first, on its own: the figure is the machines'.
		if err := l.writeTemplate(c.image, c.source, "", 0, ""); err != nil {
			return nil, err
		}
		if _, _, err := l.apply(); err != nil {
			return nil, err
		}
		stateBefore, memBefore := duKB(l.paths.StateDir), memUsedKB()
		if err := l.writeTemplate(c.image, c.source, "lab", c.copies, c.root+"resources: {memoryMax: 256M}\n"); err != nil {
			return nil, err
		}
		start := time.Now()
		if _, _, err := l.apply(); err != nil {
			return nil, err
		}
		applied := time.Since(start)
		if _, err := l.waitRunning(c.copies, c.limit, 20*time.Millisecond); err != nil {
			return nil, err
		}
		all := time.Since(start)
		stateGrew, mem := duKB(l.paths.StateDir)-stateBefore, memUsedKB()-memBefore
		fmt.Printf("   %d %s machines from one apply: apply %.2f s, all running %.2f s; state dir +%d KiB, host memory +%.0f MiB (%.1f MiB each)\n",
			c.copies, c.key, applied.Seconds(), all.Seconds(), stateGrew, float64(mem)/1024, float64(mem)/1024/float64(c.copies))
		figs[c.key+"_machines"] = c.copies
		figs[c.key+"_apply_s"] = applied.Seconds()
		figs[c.key+"_all_running_s"] = all.Seconds()
		figs[c.key+"_state_dir_growth_kb"] = stateGrew
		figs[c.key+"_memory_mb"] = float64(mem) / 1024
		// Forget them before the next template (every copy stops; the
		// persistent ones' roots are pruned).
		if err := l.writeTemplate(c.image, c.source, "", 0, ""); err != nil {
			return nil, err
		}
		if _, err := l.ctl.Apply(l.ctx, api.ApplyRequest{Path: l.defs(), Prune: true}); err != nil {
			return nil, err
		}
	}
	for _, how := range []struct{ key, root string }{
		{"ephemeral", "root: {ephemeral: true}\n"},
		{"persistent_copy", "root: {strategy: copy}\n"},
	} {
		name := "first-" + strings.ReplaceAll(how.key, "_", "-")
		if err := l.writeTemplate("deb", debian, name, 0, how.root); err != nil {
			return nil, err
		}
		start := time.Now()
		if _, _, err := l.apply(); err != nil {
			return nil, err
		}
		if _, err := l.waitRunning(1, time.Minute, 20*time.Millisecond); err != nil {
			return nil, err
		}
		d := time.Since(start)
		fmt.Printf("   first start of a Debian machine (%s image), %s: %.0f ms to running\n", sizeOf(debian), how.key, ms(d))
		figs["first_start_"+how.key+"_ms"] = ms(d)
		if err := l.writeTemplate("deb", debian, "", 0, ""); err != nil {
			return nil, err
		}
		if _, _, err := l.apply(); err != nil {
			return nil, err
		}
	}
	return figs, nil
}

// writeTemplate declares image (a directory) on the lab's network, and a
// machine name on it with extra fields: a template of copies machines
// when copies > 0, none when name is "".
func (l *reconcileLab) writeTemplate(image, dir, name string, copies int, extra string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: berth/v1\nkind: Image\nname: %s\ndirectory: %s\n---\napiVersion: berth/v1\nkind: Network\nname: bench\nsubnet: 10.96.0.0/22\n", image, dir)
	if name != "" {
		fmt.Fprintf(&b, "---\napiVersion: berth/v1\nkind: Machine\nname: %s\nimage: %s\nnetwork: bench\n%s", name, image, extra)
		if copies > 0 {
			fmt.Fprintf(&b, "copies: %d\n", copies)
		}
	}
	return os.WriteFile(filepath.Join(l.defs(), "machines.yaml"), []byte(b.String()), 0o644)
}

// waitRunning waits until n machines are running, looking every every, and
// returns when the last of them got its guest's READY=1 as its supervisor
// recorded it (the moment nspawn's --notify-ready passes it on). Each look
// is a List, whose CPU booting guests share: a suite timing many boots
// looks seldom.
func (l *reconcileLab) waitRunning(n int, limit, every time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		list, err := l.ctl.List(l.ctx)
		if err != nil {
			return time.Time{}, err
		}
		var last time.Time
		running := 0
		for _, m := range list {
			if m.State == api.StateRunning {
				running++
				if m.ReadySince.After(last) {
					last = m.ReadySince
				}
			}
		}
		if running >= n {
			return last, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%d of %d machines running after %s", running, n, limit)
		}
		time.Sleep(every)
	}
}

// duKB is what du -sk says of dir.
func duKB(dir string) int {
	out, err := exec.Command("du", "-sk", "-x", dir).Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.Fields(string(out))[0])
	return n
}

// sizeOf is du -sh of dir.
func sizeOf(dir string) string {
	out, err := exec.Command("du", "-sh", "-x", dir).Output()
	if err != nil {
		return "?"
	}
	return strings.Fields(string(out))[0]
}

// memUsedKB is the host's memory in use (MemTotal - MemAvailable), in KiB.
func memUsedKB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	vals := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			vals[strings.TrimSuffix(f[0], ":")], _ = strconv.Atoi(f[1])
		}
	}
	return vals["MemTotal"] - vals["MemAvailable"]
}
