package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCgroupLimit reads the same limits from a hybrid layout (v1 controllers)
// and from a pure cgroup2 one, each a fake tree with its own mount table.
func TestCgroupLimit(t *testing.T) {
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		mounts func(root string) string
		files  map[string]string
	}{
		{"hybrid", func(r string) string {
			return "30 26 0:26 / " + r + "/unified rw - cgroup2 cgroup2 rw\n" +
				"31 26 0:27 / " + r + "/memory rw - cgroup cgroup rw,memory\n" +
				"32 26 0:28 / " + r + "/pids rw - cgroup cgroup rw,pids\n" +
				"33 26 0:29 / " + r + "/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
		}, map[string]string{
			"memory/m/memory.limit_in_bytes": "100663296\n", "pids/m/pids.max": "200\n", "cpu,cpuacct/m/cpu.cfs_quota_us": "150000\n",
			"unified/m/cgroup.procs": "",
		}},
		{"pure cgroup2", func(r string) string {
			return "30 26 0:26 / " + r + " rw - cgroup2 cgroup2 rw,nsdelegate\n"
		}, map[string]string{"m/memory.max": "100663296\n", "m/pids.max": "200\n", "m/cpu.max": "150000 100000\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for f, c := range tc.files {
				write(filepath.Join(root, f), c)
			}
			write(filepath.Join(root, "mountinfo"), tc.mounts(root))
			old := mountinfo
			mountinfo = filepath.Join(root, "mountinfo")
			defer func() { mountinfo = old }()
			for ctrl, want := range map[string]string{"memory": "100663296", "pids": "200", "cpu": "150000"} {
				if got := CgroupLimit(t, "/m", ctrl); got != want {
					t.Errorf("%s = %q, want %q", ctrl, got, want)
				}
			}
		})
	}
}
