package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

func init() {
	register("hostboot", "N Debian 12 machines (BENCH_HOSTBOOT_N, default 50) declared on a systemd test host: one apply to all running, the host's shutdown with all of them, and the host's boot to all running again (the testhost package's TestManyInTestHost, which also checks that no guest fails and berthd.service starts without a timeout)", benchHostBoot)
}

// hostFigure is a "figure: KEY: …" line of TestManyInTestHost; the numbers
// of its text are in seconds, the last one the KEY's figure.
var hostFigure = regexp.MustCompile(`figure: (\w+): (.*)`)

// benchHostBoot runs TestManyInTestHost with N machines and reports its
// figures. The test fails (and so does the suite) when a guest is not
// running, a scope's stop timed out, or berthd's start did.
func benchHostBoot() (map[string]any, error) {
	n := os.Getenv("BENCH_HOSTBOOT_N")
	if n == "" {
		n = "50"
	}
	cmd := exec.Command("go", "test", "-count=1", "-timeout=20m", "-run", "^TestManyInTestHost$", "-v", "./internal/testhost")
	cmd.Env = append(os.Environ(), "BERTH_TEST_MANY="+n)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("TestManyInTestHost with %s machines: %v\n%s", n, err, out)
	}
	figs := map[string]any{"machines": n}
	num := regexp.MustCompile(`[0-9]+\.[0-9]+`)
	for _, m := range hostFigure.FindAllStringSubmatch(string(out), -1) {
		fmt.Printf("   %s: %s\n", m[1], strings.TrimSpace(m[2]))
		if ns := num.FindAllString(m[2], -1); len(ns) > 0 {
			v, _ := strconv.ParseFloat(ns[len(ns)-1], 64)
			figs[m[1]+"_s"] = v
		}
	}
	return figs, nil
}
