package main

import (
	"errors"
	"fmt"
	"github.com/berthd/berth/internal/testenv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func init() {
	register("boot", "boot to READY=1 and poweroff of the Debian 12 systemd guest: berth boot vs systemd-nspawn -b on the same root, supervisor RSS", benchBoot)
}

// bootRuns is the number of measured runs of each (BENCH_BOOT_RUNS overrides).
var bootRuns = 7

func init() {
	if n, err := strconv.Atoi(os.Getenv("BENCH_BOOT_RUNS")); err == nil && n > 0 {
		bootRuns = n
	}
}

// benchBoot boots the cached Debian 12 minbase+systemd guest (a fresh copy,
// the same directory for both) with `berth boot` and with `systemd-nspawn -b`,
// alternating, bootRuns times each after one warm-up each, and reports medians:
//
//   - boot: from starting the process to the guest's READY=1 (systemd sends it
//     when startup finished, i.e. is-system-running = running); both managers
//     pass it on to their own $NOTIFY_SOCKET (nspawn with --notify-ready=yes);
//   - stop: from SIGTERM to the manager (a clean poweroff for both) to the
//     manager's exit, which both do only once every guest process is gone;
//   - rss: VmRSS of the manager process half a second after READY=1.
//
// Both get a private network namespace (berth's default; nspawn
// --private-network), and their console goes to a file.
func benchBoot() (map[string]any, error) {
	for _, c := range []string{"systemd-nspawn", "cp"} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, fmt.Errorf("%s is not installed (hack/deps.sh installs it)", c)
		}
	}
	cache, err := testenv.DebianGuestDir()
	if err != nil {
		return nil, fmt.Errorf("the Debian 12 guest: %w", err)
	}
	work, remove, err := newWorkDir("boot", "berth")
	if err != nil {
		return nil, err
	}
	defer remove()
	berth := filepath.Join(work, "berth")
	root := filepath.Join(work, "root")
	if out, err := exec.Command("cp", "-a", cache, root).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy the guest: %v\n%s", err, out)
	}
	// nspawn with --keep-unit makes payload/supervisor cgroups where it is
	// started: give it a cgroup of its own that we remove afterwards.
	cg := "berth-bench-" + strconv.Itoa(os.Getpid())
	defer removeCgroups(cg)
	// berth's runtime directory for these boots (each machine's is
	// RUN/machines/NAME, which berth boot removes itself).
	run := filepath.Join("/run", "berth-bench-"+strconv.Itoa(os.Getpid()))
	defer os.RemoveAll(run)

	type result struct{ boot, stop, rss []float64 }
	res := map[string]*result{"berth": {}, "nspawn": {}}
	for i := -1; i < bootRuns; i++ {
		for _, who := range []string{"berth", "nspawn"} {
			name := fmt.Sprintf("bench%d-%s", i+1, who)
			var cmd *exec.Cmd
			if who == "berth" {
				cmd = exec.Command(berth, "boot", "-D", root, "--name", name, "--network", "none",
					"--runtime-dir", run,
					"--console-log", filepath.Join(work, name+".console.log"))
			} else {
				cmd = exec.Command("/bin/sh", "-c", `for h in unified systemd; do mkdir -p /sys/fs/cgroup/$h/`+cg+` && echo $$ > /sys/fs/cgroup/$h/`+cg+`/cgroup.procs; done; exec "$@"`, "sh",
					"systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--private-network", "--notify-ready=yes",
					"--console=read-only", "-D", root, "-M", name, "-b")
			}
			b, s, rss, err := bootOnce(cmd, filepath.Join(work, name+".out"))
			if err != nil {
				return nil, fmt.Errorf("%s run %d: %w", who, i+1, err)
			}
			if i >= 0 {
				r := res[who]
				r.boot, r.stop, r.rss = append(r.boot, b), append(r.stop, s), append(r.rss, rss)
			}
		}
	}
	figs := map[string]any{"runs": bootRuns, "conditions": "2 cores, shared with other test runs; medians; same root directory (a copy of the cached Debian 12 guest); private network namespace for both"}
	for _, who := range []string{"berth", "nspawn"} {
		r := res[who]
		figs[who+"_boot_ms"] = round(median(r.boot))
		figs[who+"_stop_ms"] = round(median(r.stop))
		figs[who+"_rss_kib"] = round(median(r.rss))
		figs[who+"_boot_ms_all"] = r.boot
		figs[who+"_stop_ms_all"] = r.stop
	}
	figs["boot_ratio"] = round2(median(res["berth"].boot) / median(res["nspawn"].boot))
	figs["stop_ratio"] = round2(median(res["berth"].stop) / median(res["nspawn"].stop))
	figs["rss_ratio"] = round2(median(res["berth"].rss) / median(res["nspawn"].rss))
	fmt.Printf("   %-8s %10s %10s %10s\n", "", "boot ms", "stop ms", "RSS KiB")
	for _, who := range []string{"berth", "nspawn"} {
		fmt.Printf("   %-8s %10.0f %10.0f %10.0f\n", who, figs[who+"_boot_ms"], figs[who+"_stop_ms"], figs[who+"_rss_kib"])
	}
	fmt.Printf("   %-8s %10.2f %10.2f %10.2f   (berth / nspawn; lower is better)\n", "ratio", figs["boot_ratio"], figs["stop_ratio"], figs["rss_ratio"])
	return figs, nil
}

// bootOnce starts cmd with a notify socket, waits for READY=1, samples the
// process's RSS, sends SIGTERM and waits for the exit.
func bootOnce(cmd *exec.Cmd, out string) (bootMS, stopMS, rssKiB float64, err error) {
	sockPath := out + ".notify"
	_ = os.Remove(sockPath)
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		return 0, 0, 0, err
	}
	defer os.Remove(sockPath)
	defer sock.Close()
	f, err := os.Create(out)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockPath)
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ready := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			_ = sock.SetReadDeadline(time.Now().Add(60 * time.Second))
			n, err := sock.Read(buf)
			if err != nil {
				ready <- fmt.Errorf("no READY=1 within 60s: %w", err)
				return
			}
			if slices.Contains(strings.Split(string(buf[:n]), "\n"), "READY=1") {
				ready <- nil
				return
			}
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			_ = cmd.Process.Kill()
			<-exited
			return 0, 0, 0, err
		}
	case err := <-exited:
		log, _ := os.ReadFile(out)
		return 0, 0, 0, fmt.Errorf("exited before READY=1 (%v): %s", err, tailString(log, 1500))
	}
	bootMS = ms(time.Since(t0))
	time.Sleep(500 * time.Millisecond)
	rssKiB = float64(rssKB(cmd.Process.Pid))
	t1 := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		return 0, 0, 0, errors.New("did not stop within 60s of SIGTERM")
	}
	stopMS = ms(time.Since(t1))
	return bootMS, stopMS, rssKiB, nil
}

// removeCgroups removes the bench's nspawn cgroup tree, deepest first.
func removeCgroups(cg string) {
	for _, h := range []string{"unified", "systemd"} {
		base := filepath.Join("/sys/fs/cgroup", h, cg)
		var dirs []string
		_ = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	}
}

func tailString(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func round(v float64) float64  { return float64(int64(v + 0.5)) }
func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }
