package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/berthd/berth/spec"
	"gopkg.in/yaml.v3"
)

func init() {
	register("spec", "load and validate 1,000 machine definitions (baseline: plain yaml.v3 decoding of the same files)", benchSpec)
}

// benchSpec times spec.Load of a tree of 1,000 machine files against the least
// any YAML-based loader must do: read the same files and decode them with yaml.v3
// into generic values. The ratio is the price of strict decoding, validation,
// defaults and positions. Medians of 9 runs, both in the same process.
func benchSpec() (map[string]any, error) {
	dir, err := os.MkdirTemp("", "berth-bench-spec-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	files := []string{filepath.Join(dir, "base.yaml")}
	if err := os.WriteFile(files[0], []byte("apiVersion: berth/v1\nkind: Image\nname: img\ndebootstrap: {suite: bookworm}\n---\napiVersion: berth/v1\nkind: Network\nname: lan\nsubnet: 10.80.0.0/16\n"), 0o644); err != nil {
		return nil, err
	}
	for i := range 1000 {
		f := filepath.Join(dir, fmt.Sprintf("m%04d.yaml", i))
		body := fmt.Sprintf("apiVersion: berth/v1\nkind: Machine\nname: m%04d\nimage: img\nnetwork:\n  name: lan\n  address: 10.80.%d.%d\n  ports: [\"%d:80\"]\nmounts:\n  - {source: /srv/m%04d, target: /var/www, readOnly: true}\n  - {type: tmpfs, target: /scratch, size: 64M}\nenvironment: {ROLE: web}\nresources: {memoryMax: 512M, cpus: 0.5, pidsMax: 512}\nrestart: {policy: always}\n", i, i/200, i%200+2, 10000+i, i)
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	median := func(run func() error) (time.Duration, error) {
		var ds []time.Duration
		for range 9 {
			start := time.Now()
			if err := run(); err != nil {
				return 0, err
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)/2], nil
	}
	load, err := median(func() error {
		set, err := spec.Load(dir)
		if err == nil && len(set.Machines) != 1000 {
			err = fmt.Errorf("loaded %d machines", len(set.Machines))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	plain, err := median(func() error {
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			dec := yaml.NewDecoder(bytes.NewReader(data))
			for {
				var v any
				if err := dec.Decode(&v); err != nil {
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ratio := float64(load) / float64(plain)
	fmt.Printf("   spec.Load of 1,000 machines: %.1f ms (median of 9); yaml.v3 decoding alone: %.1f ms; ratio %.2f\n",
		float64(load)/1e6, float64(plain)/1e6, ratio)
	return map[string]any{
		"machines":       1000,
		"load_ms":        float64(load) / 1e6,
		"yaml_only_ms":   float64(plain) / 1e6,
		"ratio_vs_yaml":  ratio,
		"target_load_ms": 100,
	}, nil
}
