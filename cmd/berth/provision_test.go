package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/testenv"
	"github.com/berthd/berth/internal/testenv/machinetest"
)

// TestProvisionDebian boots a Debian 12 (systemd 252) machine under berthd
// with credentials from the three host sources (a file, berthd's environment,
// berthd's own $CREDENTIALS_DIRECTORY) and files: systemd imports the
// credentials (ssh.authorized_keys.root and login.motd through its
// tmpfiles.d/provision.conf), the files are there with their owners and
// modes, and no secret is in berthd's state, the run directory, status or
// events. A literal value in a definition berth apply would keep is refused.
func TestProvisionDebian(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	testenv.SkipIfShort(t)
	p := startBerthd(t)
	rt := "--runtime-dir=" + p.RuntimeDir
	name := testenv.UniqueName("prov")
	tmp := t.TempDir()
	// mkpasswd -m sha-512 -S berthsalt secret
	hashed := "$6$berthsalt$" + testenv.UniqueName("notarealhash")
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + testenv.UniqueName("key") + " test@berth"
	motd := "welcome-" + testenv.UniqueName("motd")
	if err := os.WriteFile(filepath.Join(tmp, "root.hash"), []byte(hashed), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BERTH_TEST_ROOT_KEY", key)
	credDir := filepath.Join(tmp, "berthd-creds")
	if err := os.Mkdir(credDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(credDir, "motd"), []byte(motd+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", credDir)

	defs := filepath.Join(tmp, "defs")
	if err := os.MkdirAll(defs, 0o755); err != nil {
		t.Fatal(err)
	}
	def := fmt.Sprintf(`apiVersion: berth/v1
kind: Image
name: deb
directory: %s
---
apiVersion: berth/v1
kind: Machine
name: %s
image: deb
credentials:
  passwd.hashed-password.root: {file: %s}
  ssh.authorized_keys.root: {env: BERTH_TEST_ROOT_KEY}
  login.motd: {credential: motd}
files:
  # systemd's first boot: its firstboot then reads the credentials.
  - path: /etc/machine-id
    content: "uninitialized\n"
    mode: "0444"
  - path: /etc/berth/provisioned.conf
    content: "provisioned by berth\n"
    mode: "0600"
  - path: /home/user/notes
    content: "notes\n"
    owner: "1000:1000"
    mode: "0640"
`, testenv.DebianGuest(t), name, filepath.Join(tmp, "root.hash"))
	if err := os.WriteFile(filepath.Join(defs, "m.yaml"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	runDir := rundir.For(p.RuntimeDir, name).Path()
	t.Cleanup(func() {
		if c, err := container.Dial(runDir); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = c.Terminate(ctx)
			_, _ = c.Wait(ctx)
			cancel()
		}
	})
	if code, out, errs := run(t, rt, "apply", defs); code != 0 {
		t.Fatalf("apply = %d:\n%s%s", code, out, errs)
	}
	machinetest.WaitPhase(t, runDir, container.PhaseRunning, 1)

	testenv.Eventually(t, 30*time.Second, func() error {
		if got := inMachine(t, runDir, "sh", "-c", "cat /root/.ssh/authorized_keys 2>&1 || true"); got != key {
			return fmt.Errorf("ssh.authorized_keys.root: /root/.ssh/authorized_keys is %q", got)
		}
		return nil
	})
	if got := inMachine(t, runDir, "cat", "/etc/motd.d/50-provision.conf"); got != motd {
		t.Errorf("login.motd: /etc/motd.d/50-provision.conf is %q, want %q", got, motd)
	}
	if got := inMachine(t, runDir, "stat", "-c", "%a %u:%g", "/root/.ssh/authorized_keys"); got != "600 0:0" {
		t.Errorf("authorized_keys is %s", got)
	}
	// files: made it a first boot for systemd (an empty machine-id is not
	// one), so systemd-firstboot ran with passwd.hashed-password.root. Its
	// version 252 sets root's password only where the image has no
	// /etc/shadow yet; Debian's has one, so root stays as the image has it.
	if got := inMachine(t, runDir, "systemctl", "show", "-P", "ActiveState", "systemd-firstboot.service"); got != "active" {
		t.Errorf("systemd-firstboot.service is %s: not a first boot", got)
	}
	shadow := inMachine(t, runDir, "sh", "-c", "grep ^root: /etc/shadow | cut -d: -f2")
	t.Logf("root's password field in /etc/shadow after the first boot: %q (the credential: %q)", shadow, hashed)
	if got := inMachine(t, runDir, "stat", "-c", "%a %u:%g %s", "/etc/berth/provisioned.conf", "/home/user/notes"); got != "600 0:0 21\n640 1000:1000 6" {
		t.Errorf("files: %q", got)
	}
	// A service of the guest gets a credential of the machine.
	if got := inMachine(t, runDir, "systemd-run", "--wait", "-P", "-q", "-p", "LoadCredential=login.motd", "sh", "-c", "cat $CREDENTIALS_DIRECTORY/login.motd"); got != motd {
		t.Errorf("LoadCredential=login.motd in the guest gives %q", got)
	}

	// No secret in clear outside the machine's own root.
	code, status, errs := run(t, rt, "-o", "json", "status", name)
	if code != 0 {
		t.Fatalf("status = %d: %s", code, errs)
	}
	_, events, _ := run(t, rt, "-o", "json", "events")
	for _, secret := range []string{hashed, key, motd} {
		if strings.Contains(status, secret) || strings.Contains(events, secret) {
			t.Errorf("status or events show a credential's value")
		}
		for _, dir := range []string{filepath.Join(p.StateDir, "berthd"), p.RuntimeDir, p.LogDir} {
			if f := fileContaining(t, dir, secret); f != "" {
				t.Errorf("%s holds a credential's value in clear", f)
			}
		}
	}

	// files: are written before the first boot only: a changed content is
	// a live change the root keeps out of, also across a restart.
	if err := os.WriteFile(filepath.Join(defs, "m.yaml"), []byte(strings.Replace(def, "provisioned by berth", "changed later", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := run(t, rt, "plan", defs); code != 2 || !strings.Contains(out, "files[1].content: provisioned by berth\n → changed later\n (written before a root's first boot only") || strings.Contains(out, ": restart") {
		t.Errorf("plan after files changed = %d:\n%s%s", code, out, errs)
	}
	if code, out, errs := run(t, rt, "apply", defs); code != 0 {
		t.Fatalf("apply = %d:\n%s%s", code, out, errs)
	}
	if code, out, errs := run(t, rt, "reboot", name); code != 0 {
		t.Fatalf("reboot = %d:\n%s%s", code, out, errs)
	}
	machinetest.WaitPhase(t, runDir, container.PhaseRunning, 2)
	if got := inMachine(t, runDir, "cat", "/etc/berth/provisioned.conf"); got != "provisioned by berth" {
		t.Errorf("after a restart with changed files: %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(p.StateDir, "machines", name, "root.json")); err != nil || !strings.Contains(string(b), `"provisioned":`) {
		t.Errorf("root.json does not record the provisioning: %s %v", b, err)
	}

	// A literal value: refused by apply PATH (its copy would hold it).
	lit := filepath.Join(tmp, "literal")
	if err := os.MkdirAll(lit, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lit, "m.yaml"), []byte(strings.NewReplacer("{file: "+filepath.Join(tmp, "root.hash")+"}", "{value: \""+hashed+"\"}", "name: deb", "name: deb2", "image: deb", "image: deb2", name, name+"-lit").Replace(def)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := run(t, rt, "plan", lit); code != 1 || !strings.Contains(out+errs, "credentials.passwd.hashed-password.root.value: machine") || !strings.Contains(out+errs, "use file:") {
		t.Errorf("plan with a literal credential = %d:\n%s%s", code, out, errs)
	}
}

// fileContaining is the first file under dir whose content holds s.
func fileContaining(t *testing.T, dir, s string) string {
	t.Helper()
	var found string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found != "" || !d.Type().IsRegular() {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), s) {
			found = p
		}
		return nil
	})
	return found
}
