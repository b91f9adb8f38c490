package main

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/ocibundle"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
)

// runcBundle makes an OCI runtime bundle as a person would: config.json from
// `runc spec` (with extra arguments such as --rootless), the rootfs a copy
// of the busybox test guest; edit changes config.json.
func runcBundle(t *testing.T, edit func(spec map[string]any), extra ...string) string {
	t.Helper()
	testenv.RequireCommand(t, "runc")
	guest := testenv.BusyboxGuest(t)
	dir := filepath.Join(t.TempDir(), "bundle")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("runc", append([]string{"spec"}, extra...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	if out, err := exec.Command("cp", "-a", guest, filepath.Join(dir, "rootfs")).CombinedOutput(); err != nil {
		t.Fatalf("copy the guest: %v: %s", err, out)
	}
	editSpec(t, dir, edit)
	return dir
}

// editSpec changes the bundle's config.json.
func editSpec(t *testing.T, dir string, edit func(spec map[string]any)) {
	t.Helper()
	file := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	edit(spec)
	if b, err = json.MarshalIndent(spec, "", "\t"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// obj is the object at key in m (made if missing).
func obj(m map[string]any, key string) map[string]any {
	if o, ok := m[key].(map[string]any); ok {
		return o
	}
	o := map[string]any{}
	m[key] = o
	return o
}

// runStdout runs berth in this process, as run does, with the process's own
// stdout (which an application with a passthrough console writes to) in a
// file, and returns the exit code, what went to that stdout, and stderr.
func runStdout(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	saved := os.Stdout
	os.Stdout = f
	code, _, stderr := run(t, args...)
	os.Stdout = saved
	b, _ := os.ReadFile(f.Name())
	return code, string(b), stderr
}

// TestBootOCIBundle runs runc spec's bundle, its process made a script and
// its terminal off, through berth boot --oci-bundle: the process's output
// on berth's stdout, as root in / with runc spec's hostname, its
// capabilities, rlimit and no_new_privs; then runc spec --rootless's, whose
// one-ID mapping berth refuses by its field, and with a range of 65536 IDs
// instead, which it runs in a user namespace of its own over the idmapped
// rootfs.
func TestBootOCIBundle(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	script := func(s string) func(map[string]any) {
		return func(spec map[string]any) {
			p := obj(spec, "process")
			p["args"], p["terminal"] = []string{"/bin/sh", "-c", s}, false
		}
	}
	run1, _ := bootRuntimeDir(t)
	logf := filepath.Join(t.TempDir(), "console.log")
	dir := runcBundle(t, script(`echo hi; id; pwd; hostname; ulimit -n; grep -E '^(CapBnd|NoNewPrivs):' /proc/self/status | tr -d '\t'`))
	name := testenv.UniqueName("oci")
	code, out, stderr := runStdout(t, "--runtime-dir", run1, "boot", "--oci-bundle", dir, "--name", name, "--console-log", logf)
	if want := "hi\nuid=0(root) gid=0(root)\n/\nrunc\n1024\nCapBnd:0000000020000420\nNoNewPrivs:1\n"; code != 0 || out != want {
		t.Errorf("runc spec's bundle: exit %d, stdout %q, want %q (stderr %q)", code, out, want, stderr)
	}
	if _, err := os.Stat(rundir.For(run1, name).Path()); !os.IsNotExist(err) {
		t.Errorf("runtime directory left: %v", err)
	}

	dir = runcBundle(t, script(`id; cat /proc/self/uid_map | tr -s ' '; stat -c %u /bin/busybox`), "--rootless")
	code, _, stderr = run(t, "--runtime-dir", run1, "boot", "--oci-bundle", dir, "--console-log", logf)
	if code != 1 || !strings.Contains(stderr, dir+"/config.json: linux.uidMappings: [{containerID 0, hostID 0, size 1}]: berth maps a machine's IDs 0…65535") ||
		!strings.Contains(stderr, "linux.gidMappings: [{containerID 0, hostID 0, size 1}]") {
		t.Errorf("runc spec --rootless: exit %d, stderr %q", code, stderr)
	}
	h := fnv.New32a()
	h.Write([]byte(t.Name()))
	base := 0x61000000 + h.Sum32()%4096*65536
	editSpec(t, dir, func(spec map[string]any) {
		m := []map[string]any{{"containerID": 0, "hostID": base, "size": 65536}}
		obj(spec, "linux")["uidMappings"], obj(spec, "linux")["gidMappings"] = m, m
	})
	state := t.TempDir()
	want := "uid=0(root) gid=0(root)\n 0 " + strconv.FormatUint(uint64(base), 10) + " 65536\n0\n"
	code, out, stderr = runStdout(t, "--runtime-dir", run1, "--state-dir", state, "boot", "--oci-bundle", dir, "--console-log", logf)
	if code != 0 || out != want {
		t.Errorf("a bundle with a range of its own: exit %d, stdout %q, want %q (stderr %q)", code, out, want, stderr)
	}
	// A rootfs owned by the range on disk, as runc needs it, is mounted as
	// it is (not idmapped a second time): the same inside.
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", base, base), filepath.Join(dir, "rootfs")).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	code, out, stderr = runStdout(t, "--runtime-dir", run1, "--state-dir", state, "boot", "--oci-bundle", dir, "--console-log", logf)
	if code != 0 || out != want {
		t.Errorf("a rootfs owned by the range: exit %d, stdout %q, want %q (stderr %q)", code, out, want, stderr)
	}
}

// TestBootOCIUsers: which users a bundle's machine gets: none without a
// user namespace, the mappings' range, shifted when the rootfs is owned by
// it on disk, idmapped otherwise, one berth picks without mappings, and
// --private-users over all of it.
func TestBootOCIUsers(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	saved, savedState := bootFlags, globals.stateDir
	t.Cleanup(func() { bootFlags, globals.stateDir = saved, savedState })
	globals.stateDir = t.TempDir()
	const base = 0x62000000
	dir := ociTestBundle(t, func(spec map[string]any) {
		l := obj(spec, "linux")
		l["namespaces"] = append(l["namespaces"].([]any), map[string]any{"type": "user"})
		m := []map[string]any{{"containerID": 0, "hostID": base, "size": 65536}}
		l["uidMappings"], l["gidMappings"] = m, m
	})
	users := func(args ...string) *container.Users {
		t.Helper()
		c := newBootCmd()
		if err := c.ParseFlags(append([]string{"--oci-bundle", dir}, args...)); err != nil {
			t.Fatal(err)
		}
		cfg, err := ociBootConfig(c.Flags(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Users
	}
	if u := users(); u == nil || u.Base != base || u.Shifted {
		t.Errorf("idmapped: %+v", u)
	}
	if err := os.Chown(filepath.Join(dir, "rootfs"), base, base); err != nil {
		t.Fatal(err)
	}
	if u := users(); u == nil || u.Base != base || !u.Shifted || !strings.Contains(u.Why, "owned by its linux.uidMappings range") {
		t.Errorf("shifted: %+v", u)
	}
	if u := users("--private-users", "off"); u != nil {
		t.Errorf("--private-users off: %+v", u)
	}
	editSpec(t, dir, func(spec map[string]any) {
		delete(obj(spec, "linux"), "uidMappings")
		delete(obj(spec, "linux"), "gidMappings")
	})
	if u := users("--name", "picked"); u == nil || u.Base == 0 || u.Base == base || u.Shifted {
		t.Errorf("picked: %+v", u)
	}
}

// TestBootOCIResources: a bundle's linux.resources land in the machine's
// cgroup as berth boot's own flags put them there, and its bind mount of a
// host directory is in place.
func TestBootOCIResources(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	share := t.TempDir()
	dir := runcBundle(t, func(spec map[string]any) {
		p := obj(spec, "process")
		p["args"], p["terminal"] = []string{"/bin/sh", "-c", "touch /out/started; while [ ! -e /out/stop ]; do sleep 0.1; done"}, false
		obj(spec, "root")["readonly"] = true
		spec["mounts"] = append(spec["mounts"].([]any), map[string]any{"destination": "/out", "type": "bind", "source": share, "options": []string{"rbind", "rw"}})
		obj(spec, "linux")["resources"] = map[string]any{
			"memory": map[string]any{"limit": 64 << 20},
			"cpu":    map[string]any{"quota": 50000, "period": 100000},
			"pids":   map[string]any{"limit": 100},
		}
	})
	run1, _ := bootRuntimeDir(t)
	name := testenv.UniqueName("oci")
	done := make(chan int, 1)
	go func() {
		code, _, _ := runStdout(t, "--runtime-dir", run1, "boot", "--oci-bundle", dir, "--name", name, "--console-log", filepath.Join(t.TempDir(), "console.log"))
		done <- code
	}()
	st := machinetest.WaitPhase(t, rundir.For(run1, name).Path(), container.PhaseRunning, 1)
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := os.Stat(filepath.Join(share, "started"))
		return err
	})
	for ctl, want := range map[string]string{"memory": "67108864", "pids": "100", "cpu": "50000"} {
		if got := testenv.CgroupLimit(t, st.CgroupPath, ctl); got != want {
			t.Errorf("%s limit of %s: %q, want %q", ctl, st.CgroupPath, got, want)
		}
	}
	if err := os.WriteFile(filepath.Join(share, "stop"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the bundle's process did not end")
	}
}

// ociTestBundle is a bundle of ocibundle's runc spec testdata, patched, over
// an empty rootfs with /bin/sh: enough to convert, not to run.
func ociTestBundle(t *testing.T, edit func(spec map[string]any)) string {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile("../../internal/ocibundle/testdata/runc-spec.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "rootfs/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs/bin/sh"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		editSpec(t, dir, edit)
	}
	return dir
}

// TestBootOCIRefused: what berth boot says of a bundle it cannot run (every
// field at once, with the file's path), and of flags that do not go with
// --oci-bundle; no root needed, nothing starts.
func TestBootOCIRefused(t *testing.T) {
	dir := ociTestBundle(t, func(spec map[string]any) {
		spec["hooks"] = map[string]any{"prestart": []any{map[string]any{"path": "/bin/true"}}}
		obj(spec, "linux")["devices"] = []any{map[string]any{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}}
	})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"boot", "--oci-bundle", dir}, "berth: " + dir + "/config.json: hooks: not supported by berth: berth runs no OCI hooks\n" +
			dir + "/config.json: linux.devices: not supported by berth: a machine gets berth's own device nodes only"},
		{[]string{"boot", "--oci-bundle", dir, "-D", dir}, "berth: boot: --directory does not go with --oci-bundle"},
		{[]string{"boot", "--oci-bundle", dir, "--init", "/sbin/init"}, "berth: boot: --init does not go with --oci-bundle"},
		{[]string{"boot", "--oci-bundle", t.TempDir()}, "config.json: no such file or directory (an OCI runtime bundle is a directory with config.json"},
		{[]string{"boot"}, "berth: boot: -D DIR is required (the machine's root directory), or --oci-bundle DIR"},
	} {
		code, _, stderr := run(t, tc.args...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("berth %s: exit %d, stderr %q; want %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
	}
}

// TestBootOCIOverrides: flags given beside --oci-bundle replace what the
// bundle says or add to it, as nspawn's command line does over a bundle.
func TestBootOCIOverrides(t *testing.T) {
	saved := bootFlags
	t.Cleanup(func() { bootFlags = saved })
	dir := ociTestBundle(t, nil)
	share := t.TempDir()
	c := newBootCmd()
	if err := c.ParseFlags([]string{"--oci-bundle", dir, "--hostname", "h", "--memory-max", "1G", "--network", "host", "--read-only=false",
		"-E", "TERM=dumb", "--bind", share + ":/share", "--capability", "CAP_SYS_ADMIN", "--drop-capability", "kill", "--", "/bin/sh", "-c", "x"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := ociBootConfig(c.Flags(), c.Flags().Args())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != filepath.Base(dir) || cfg.Hostname != "h" || cfg.Resources.MemoryMax != 1<<30 || cfg.Resources.PidsMax != 0 ||
		cfg.NetworkMode != "host" || cfg.Root.ReadOnly || cfg.Env[len(cfg.Env)-1] != "TERM=dumb" || len(cfg.Mounts) != 1 ||
		!reflect.DeepEqual(cfg.Args, []string{"/bin/sh", "-c", "x"}) || !reflect.DeepEqual(cfg.AmbientCaps, []string{"CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE"}) ||
		!strings.Contains(strings.Join(cfg.CapAdd, ","), "CAP_SYS_ADMIN") || strings.Contains(strings.Join(cfg.CapDrop, ","), "CAP_SYS_ADMIN") ||
		cfg.CapDrop[len(cfg.CapDrop)-1] != "CAP_KILL" || cfg.Users != nil || !cfg.AllowTun {
		t.Errorf("config: %+v", cfg)
	}
	b, _ := ocibundle.Load(dir)
	if b.Config.Hostname != "runc" || !b.Config.Root.ReadOnly {
		t.Errorf("the bundle itself: %+v", b.Config)
	}
}
