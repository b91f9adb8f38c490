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
	figs := map[string]any{"runs": bootRuns, "first_runs": firstRuns,
		"conditions": "2 cores, shared with other test runs; medians; steady state: copies of the cached Debian 12 guest booted before; " +
			"first start: a fresh copy each run, never booted, under a new name; private network namespace for all"}
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

// firstFigures records and prints the first starts' medians on each tree,
// berth's ratios to nspawn's, and how each variant's first start grew with
// the tree.
func firstFigures(figs map[string]any, res map[string]*bootSeries, chowned map[string]bool, trees []*bootTree) {
	fmt.Printf("   first start (a fresh copy, never booted, a new name), medians of %d runs:\n", firstRuns)
	fmt.Printf("   trees:")
	for i, t := range trees {
		figs["tree_"+t.label+"_files"], figs["tree_"+t.label+"_bytes"] = t.files, t.bytes
		fmt.Printf("%s %s %s in %d files", map[bool]string{true: "", false: ";"}[i == 0], t.label, rfHuman(t.bytes), t.files)
	}
	fmt.Printf(" (the cached guest; the guest and %d MiB more)\n   %-28s", (extraDirs*extraFiles*extraFileSize+extraBig*extraBigSize)>>20, "")
	for _, t := range trees {
		fmt.Printf(" %10s %10s", t.label+" boot", t.label+" stop")
	}
	fmt.Printf(" %12s\n", "large/small")
	small, large := trees[0].label, trees[len(trees)-1].label
	for _, v := range firstVariants {
		fmt.Printf("   %-28s", v.label)
		for _, t := range trees {
			r, k := res[v.key+"/"+t.label], "first_"+v.key+"_"+t.label
			figs[k+"_boot_ms"], figs[k+"_stop_ms"] = round(median(r.boot)), round(median(r.stop))
			figs[k+"_boot_ms_all"] = r.boot
			fmt.Printf(" %10.0f %10.0f", median(r.boot), median(r.stop))
		}
		g := round2(median(res[v.key+"/"+large].boot) / median(res[v.key+"/"+small].boot))
		figs["first_"+v.key+"_size_ratio"] = g
		fmt.Printf(" %12.2f\n", g)
	}
	for _, den := range firstVariants[1:] {
		fmt.Printf("   %-28s", "ratio berth / "+den.label)
		for _, t := range trees {
			b := round2(median(res[vBerth.key+"/"+t.label].boot) / median(res[den.key+"/"+t.label].boot))
			figs["first_"+vBerth.key+"_over_"+den.key+"_boot_ratio_"+t.label] = b
			fmt.Printf(" %10.2f %10s", b, "")
		}
		fmt.Println()
	}
	fmt.Printf("   owners of the copy after its first start:")
	for i, v := range firstVariants {
		figs["first_"+v.key+"_chowned"] = chowned[v.key]
		how := "kept (idmapped root)"
		if chowned[v.key] {
			how = "chowned to the range"
		}
		fmt.Printf("%s %s %s", map[bool]string{true: "", false: ";"}[i == 0], v.label, how)
	}
	fmt.Println()
}
