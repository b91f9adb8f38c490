package container_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/internal/testenv"
)

// credUsersBase is a range of this test's own, clear of the other tests'.
const credUsersBase = 0x5E000000

// TestCredentials: the credentials berthd leaves in the run directory reach
// the command at $CREDENTIALS_DIRECTORY (/run/host/credentials): 0400 files of
// the machine's root on a read-only ramfs, neither writable nor in the host's
// mount table, and gone from the run directory once the supervisor read them.
func TestCredentials(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	root := testenv.BusyboxGuest(t)
	for _, tc := range []struct {
		name  string
		users *container.Users
		owner string
	}{
		{"host users", nil, "0"},
		{"private users", &container.Users{Base: credUsersBase, Size: 65536}, "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := newConfig(t, "cred")
			cfg.Root = container.Root{Dir: root, ReadOnly: true}
			cfg.Users = tc.users
			dir := rundir.Dir(cfg.RuntimeDir).Credentials()
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			creds := map[string]string{"passwd.hashed-password.root": "$6$salt$hash", "login.motd": "hello from the host\n"}
			for name, v := range creds {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o400); err != nil {
					t.Fatal(err)
				}
				cfg.Credentials = append(cfg.Credentials, name)
			}
			cfg.Args = []string{"/bin/sh", "-c", `d=$CREDENTIALS_DIRECTORY; echo "dir=$d"
for f in $d/*; do stat -c 'file %n %a %u' "$f"; done
echo "motd=$(cat $d/login.motd)"
echo x > $d/login.motd 2>/dev/null && echo WRITABLE
touch $d/new 2>/dev/null && echo CREATED
grep -q ' /run/host/credentials ro,' /proc/self/mountinfo && echo MOUNTED-RO
grep ' /run/host/credentials ' /proc/self/mountinfo`}
			ex, err := container.Supervise(context.Background(), cfg, container.Hooks{})
			if err != nil || ex.Code != 0 {
				t.Fatalf("exit %v: %v", ex, err)
			}
			log, _ := os.ReadFile(cfg.ConsoleLog)
			out := strings.ReplaceAll(string(log), "\r", "")
			for _, want := range []string{
				"dir=/run/host/credentials\n",
				"file /run/host/credentials/login.motd 400 " + tc.owner + "\n",
				"file /run/host/credentials/passwd.hashed-password.root 400 " + tc.owner + "\n",
				"motd=hello from the host\n",
				"MOUNTED-RO\n",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("the command's output lacks %q:\n%s", want, out)
				}
			}
			for _, bad := range []string{"WRITABLE", "CREATED"} {
				if strings.Contains(out, bad) {
					t.Errorf("the credentials are not read-only (%s):\n%s", bad, out)
				}
			}
			if !strings.Contains(out, "ramfs") {
				t.Errorf("the credentials are not on a ramfs:\n%s", out)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("%s is still there after the supervisor read it (%v)", dir, err)
			}
			mi, _ := os.ReadFile("/proc/self/mountinfo")
			if strings.Contains(string(mi), "credentials") {
				t.Errorf("the host's mount table shows the credentials:\n%s", mi)
			}
			if l := leaks(t, cfg); len(l) > 0 {
				t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
			}
		})
	}
}
