package main

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The measuring helpers every suite uses.

// median is the middle of v (the upper middle for an even count), 0 for none.
func median[T cmp.Ordered](v []T) T {
	if len(v) == 0 {
		var zero T
		return zero
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// envInt is the number in the environment variable name (a suite's
// BENCH_… setting), def when it is unset, not a number or below least.
func envInt(name string, def, least int) int {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil || n < least {
		return def
	}
	return n
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// rssKB is a process's resident set in KiB (VmRSS), 0 when unknown.
func rssKB(pid int) int { return procNumber(pid, "status", "VmRSS:") }

// pssKB is a process's proportional set in KiB (Pss in smaps_rollup: each
// page shared with other processes counted as its share), 0 when unknown.
func pssKB(pid int) int { return procNumber(pid, "smaps_rollup", "Pss:") }

// procNumber is the number on the "KEY n" or "KEY n kB" line of
// /proc/PID/FILE, 0 when unknown.
func procNumber(pid int, file, key string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// profile starts perf record -a -g into manyPerf/NAME.data and returns what
// ends it; nothing without BENCH_MANY_PERF.
func profile(name string) func() {
	if manyPerf == "" {
		return func() {}
	}
	cmd := exec.Command("perf", "record", "-a", "-g", "-F", "499", "-q", "-o", filepath.Join(manyPerf, name+".data"))
	if err := cmd.Start(); err != nil {
		fmt.Printf("   perf record: %v\n", err)
		return func() {}
	}
	time.Sleep(200 * time.Millisecond) // perf is ready
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
}
