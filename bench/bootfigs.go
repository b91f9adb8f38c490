package main

import "fmt"

// bootRatios are the steady-state ratios recorded, as PREFIX{boot,stop,rss}_ratio.
var bootRatios = []struct{ prefix, num, den, about string }{
	{"", vBerth.key, vNspawn.key, "berth / nspawn -b, each as invoked by default"},
	{"userns_", vBerth.key, vNspawnU.key, "berth -U / nspawn -U, both with private users (goal: boot ≤ 0.75)"},
	{"off_", vBerthOff.key, vNspawn.key, "berth -U off / nspawn -b, neither with private users"},
	{"userns_cost_", vBerth.key, vBerthOff.key, "berth -U / berth -U off: the user namespace's cost"},
}

// steadyFigures records and prints each steady-state variant's medians and
// the ratios between them.
func steadyFigures(res map[string]*bootSeries) map[string]any {
	figs := map[string]any{"runs": bootRuns,
		"conditions": "2 cores, shared with other test runs; medians; copies of the cached Debian 12 guest booted before; private network namespace for all"}
	fmt.Printf("   steady state (a copy of the guest booted before), medians of %d runs:\n", bootRuns)
	fmt.Printf("   %-28s %10s %10s %10s\n", "", "boot ms", "stop ms", "RSS KiB")
	for _, v := range steadyVariants {
		r := res[v.key]
		figs[v.key+"_boot_ms"] = round(median(r.boot))
		figs[v.key+"_stop_ms"] = round(median(r.stop))
		figs[v.key+"_rss_kib"] = round(median(r.rss))
		figs[v.key+"_boot_ms_all"] = r.boot
		figs[v.key+"_stop_ms_all"] = r.stop
		fmt.Printf("   %-28s %10.0f %10.0f %10.0f\n", v.label, median(r.boot), median(r.stop), median(r.rss))
	}
	for _, q := range bootRatios {
		n, d := res[q.num], res[q.den]
		b := round2(median(n.boot) / median(d.boot))
		s := round2(median(n.stop) / median(d.stop))
		m := round2(median(n.rss) / median(d.rss))
		figs[q.prefix+"boot_ratio"], figs[q.prefix+"stop_ratio"], figs[q.prefix+"rss_ratio"] = b, s, m
		fmt.Printf("   %-28s %10.2f %10.2f %10.2f   %s\n", "ratio", b, s, m, q.about)
	}
	return figs
}
