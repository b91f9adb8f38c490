package ocibundle

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/errdefs"
)

// runcMasked and runcReadOnly are runc spec's linux.maskedPaths and
// readonlyPaths.
var (
	runcMasked = []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
		"/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"}
	runcReadOnly = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
	runcCaps     = []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
)

// bundleDir makes a bundle directory with config.json and a rootfs holding
// an executable /bin/sh.
func bundleDir(t *testing.T, config []byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "rootfs/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs/bin/sh"), []byte("#!\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if config != nil {
		if err := os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func testdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRuncSpec: what `runc spec` writes becomes a machine as it asks: the
// bare "sh" found in the root's PATH, root with no supplementary groups,
// runc's three capabilities as the bounding set (the rest of berth's
// default dropped), a pty console, a read-only root, its rlimit,
// no_new_privs and masks; berth's own mounts stand for its seven.
func TestRuncSpec(t *testing.T) {
	dir := bundleDir(t, testdata(t, "runc-spec.json"))
	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := container.Config{
		Root:            container.Root{Dir: filepath.Join(dir, "rootfs"), ReadOnly: true},
		Args:            []string{"/bin/sh"},
		Env:             []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"},
		Hostname:        "runc",
		WorkingDir:      "/",
		User:            &container.User{UID: 0, GID: 0},
		Console:         "pty",
		NetworkMode:     "private",
		CapDrop:         minus(container.DefaultCapabilities(true), runcCaps),
		AmbientCaps:     runcCaps,
		NoNewPrivileges: true,
		Rlimits:         []container.Rlimit{{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 1024}},
		MaskedPaths:     runcMasked,
		ReadOnlyPaths:   runcReadOnly,
	}
	if !reflect.DeepEqual(b.Config, want) {
		t.Errorf("config:\n got %+v\nwant %+v", b.Config, want)
	}
	if b.UserNS != nil || b.Dir != dir {
		t.Errorf("user namespace %+v, dir %s", b.UserNS, b.Dir)
	}
}

// TestRuncSpecRootless: runc spec --rootless maps one ID, which berth cannot
// do, and says so for both mappings; its bind of the host's /sys is taken as
// berth's own /sys.
func TestRuncSpecRootless(t *testing.T) {
	_, err := Load(bundleDir(t, testdata(t, "runc-spec-rootless.json")))
	checkErrors(t, err, []string{
		"linux.uidMappings: [{containerID 0, hostID 0, size 1}]: berth maps a machine's IDs 0…65535 to one range of 65536 host IDs",
		"linux.gidMappings: [{containerID 0, hostID 0, size 1}]: berth maps a machine's IDs 0…65535 to one range of 65536 host IDs",
	})
}

// TestUmociUnpack: umoci's bundle of an image with a user, a working
// directory and an environment: a user other than root keeps umoci's three
// capabilities as its ambient set, as under runc.
func TestUmociUnpack(t *testing.T) {
	b, err := Load(bundleDir(t, testdata(t, "umoci-unpack.json")))
	if err != nil {
		t.Fatal(err)
	}
	c := b.Config
	if !reflect.DeepEqual(c.User, &container.User{UID: 1000, GID: 1000}) || c.WorkingDir != "/tmp" || c.Args[0] != "/bin/sh" ||
		c.Env[2] != "FOO=bar" || !reflect.DeepEqual(c.AmbientCaps, runcCaps) || c.Hostname != "umoci-default" || c.Root.ReadOnly {
		t.Errorf("config: %+v", c)
	}
}

// TestGenerators makes bundles with the real tools where they are installed
// and loads them: runc spec and umoci unpack convert, runc spec --rootless
// is refused for its mappings only.
func TestGenerators(t *testing.T) {
	t.Run("runc spec", func(t *testing.T) {
		dir := bundleDir(t, nil)
		generate(t, dir, "runc", "spec")
		if _, err := Load(dir); err != nil {
			t.Error(err)
		}
		os.Remove(filepath.Join(dir, "config.json"))
		generate(t, dir, "runc", "spec", "--rootless")
		_, err := Load(dir)
		if n := len(fieldErrors(err)); n != 2 || !strings.Contains(err.Error(), "linux.uidMappings") {
			t.Errorf("runc spec --rootless: %d errors: %v", n, err)
		}
	})
	t.Run("umoci unpack", func(t *testing.T) {
		tmp := t.TempDir()
		layout := filepath.Join(tmp, "img")
		generate(t, tmp, "umoci", "init", "--layout", layout)
		generate(t, tmp, "umoci", "new", "--image", layout+":t")
		generate(t, tmp, "umoci", "config", "--image", layout+":t", "--config.cmd", "/bin/sh", "--config.user", "1000:1000")
		unpack := []string{"unpack", "--image", layout + ":t", filepath.Join(tmp, "bundle")}
		if os.Geteuid() != 0 {
			unpack = append(unpack[:1], append([]string{"--rootless"}, unpack[1:]...)...)
		}
		generate(t, tmp, "umoci", unpack...)
		b, err := Load(filepath.Join(tmp, "bundle"))
		if os.Geteuid() != 0 {
			if !strings.Contains(errString(err), "linux.uidMappings") {
				t.Errorf("umoci unpack --rootless: %v", err)
			}
			return
		}
		if err != nil || b.Config.User.UID != 1000 {
			t.Errorf("umoci unpack: %+v, %v", b, err)
		}
	})
}

// generate runs a generator in dir, skipping the test without it.
func generate(t *testing.T, dir, tool string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s is not installed (hack/deps.sh installs it)", tool)
	}
	cmd := exec.Command(tool, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
}

// TestSyntaxError: config.json that is not JSON, or not of the spec's
// shape, is refused at its line and column.
func TestSyntaxError(t *testing.T) {
	for in, want := range map[string]string{
		"{\n  \"ociVersion\": \"1.0.0\",\n  \"process\": {,}\n}": "config.json:3:15: invalid: invalid character ','",
		"{\n  \"process\": {\"args\": \"sh\"}\n}":                "config.json:2:26: invalid: json: cannot unmarshal string",
	} {
		_, err := Parse("config.json", []byte(in), t.TempDir())
		if err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%q: %v, want %q…", in, err, want)
		}
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "an OCI runtime bundle is a directory with config.json") {
		t.Errorf("no config.json: %v", err)
	}
}

// checkErrors says whether err holds exactly the field errors want (each a
// prefix of one error's text after "config.json: "), in that order.
func checkErrors(t *testing.T, err error, want []string) {
	t.Helper()
	got := fieldErrors(err)
	if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("%v: not of class invalid", err)
	}
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = strings.HasPrefix(strings.TrimPrefix(got[i], "config.json: "), want[i])
	}
	if !ok {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func fieldErrors(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if fe, ok := e.(*FieldError); ok {
				out = append(out, "config.json: "+fe.Path+": "+fe.Msg)
			} else {
				out = append(out, e.Error())
			}
		}
		return out
	}
	return []string{err.Error()}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// patched is runc spec's config.json with patch merged in (a null deletes a
// key; an array replaces the one there).
func patched(t *testing.T, patch string) []byte {
	t.Helper()
	var base, p map[string]any
	if err := json.Unmarshal(testdata(t, "runc-spec.json"), &base); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(patch), &p); err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
	merge(base, p)
	b, err := json.Marshal(base)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		sub, isMap := v.(map[string]any)
		have, haveMap := dst[k].(map[string]any)
		switch {
		case v == nil:
			delete(dst, k)
		case isMap && haveMap:
			merge(have, sub)
		default:
			dst[k] = v
		}
	}
}

// FuzzParse: config.json from anyone never panics the conversion, and what
// it refuses is always of class invalid.
func FuzzParse(f *testing.F) {
	for _, n := range []string{"runc-spec.json", "runc-spec-rootless.json", "umoci-unpack.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	dir := f.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "rootfs/bin"), 0o755); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse("config.json", data, dir)
		if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%v: not of class invalid", err)
		}
		if err == nil && (b == nil || b.Config.Root.Dir == "" || len(b.Config.Args) == 0) {
			t.Errorf("accepted without a root or a process: %+v", b)
		}
	})
}
