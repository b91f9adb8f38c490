package testhost

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// TestConsoleAndLoginInTestHost: a machine berthd started (in a user
// namespace of its own, the default) on a real systemd host, reached from
// terminals as a person would. machinectl login and berth login each give a
// getty on a pts of the guest's, root logs in, runs a command, logs out and
// gets a new prompt, ^] three times leaves; berth login's getty is stopped
// after it. berth console attaches one writer, sized as its terminal, and a
// read-only watcher who sees the same; a second writer is refused naming the
// first; both detach and the machine runs on; a watcher sees it stop and
// says so. A machine berth boot runs on a terminal is watched the same way,
// and its console's writer is that terminal.
func TestConsoleAndLoginInTestHost(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	guest, busybox := testenv.DebianGuest(t), testenv.BusyboxGuest(t)
	h, _, exec := bootWithBerth(ctx, t, Options{BindRO: []string{guest + ":/srv/guest", busybox + ":/srv/busybox"}})
	def := "apiVersion: berth/v1\nkind: Image\nname: debian12\ndirectory: /srv/guest\n---\n" +
		"apiVersion: berth/v1\nkind: Machine\nname: c1\nimage: debian12\n"
	if err := os.WriteFile(filepath.Join(h.Dir, "etc/berth/machines/c1.yaml"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	waitRunning(ctx, t, h, 60*time.Second, "c1")
	exec("berth", "shell", "c1", "sh", "-c", "echo root:berth-test | chpasswd")

	// open runs args on a terminal of their own; step waits for want on it
	// and then types send.
	type session struct {
		*Term
		name string
	}
	open := func(args ...string) session {
		t.Helper()
		term, err := h.Terminal(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { term.Close() })
		return session{term, strings.Join(args, " ")}
	}
	step := func(s session, want, send string) bool {
		t.Helper()
		if _, err := s.Expect(want, 20*time.Second); err != nil {
			t.Errorf("%s: %v; the terminal shows:\n%s", s.name, err, testenv.Tail(s.Output(), 2000))
			return false
		}
		return s.Send(send) == nil
	}
	ended := func(s session) {
		t.Helper()
		if err := s.Wait(10 * time.Second); err != nil {
			t.Errorf("%s: %v\n%s", s.name, err, testenv.Tail(s.Output(), 2000))
		}
	}

	for _, args := range [][]string{{"machinectl", "login", "c1"}, {"berth", "login", "c1"}} {
		begin := time.Now()
		s := open(args...)
		_ = step(s, "Connected to machine c1", "") &&
			step(s, "c1 login: ", "")
		t.Logf("%s: the login prompt %v after the command started", s.name, time.Since(begin))
		_ = s.Send("root\r") == nil &&
			step(s, "Password: ", "berth-test\r") &&
			// The exit comes after the output is seen: what a shell writes
			// just before it ends may be lost with the terminal's hangup
			// (seen once through machinectl login).
			step(s, "# ", "echo uid=$(id -u) tty=$(tty)\r") &&
			step(s, "uid=0 tty=/dev/pts/", "exit\r") &&
			// Logged out, the getty comes back: ^] three times within a
			// second ends the session.
			step(s, "c1 login: ", "\x1d\x1d\x1d")
		ended(s)
	}
	// berth login stopped its getty (machined leaves machinectl's to end
	// at the hangup: ConditionPathExists fails once the pts is gone).
	if err := testenv.Poll(10*time.Second, func() error {
		if out, _ := h.Exec(ctx, "berth", "shell", "c1", "systemctl", "list-units", "--no-legend", "--plain", "container-getty@*"); strings.Contains(string(out), "active") {
			return fmt.Errorf("still running: %s", out)
		}
		return nil
	}); err != nil {
		journal, _ := h.Exec(ctx, "berth", "shell", "c1", "journalctl", "-q", "--no-pager", "-o", "short-precise", "-u", "container-getty@*")
		t.Errorf("a getty outlived its login session: %v\n%s", err, journal)
	}

	// The console: its getty, one writer, a watcher.
	w := open("berth", "console", "c1")
	r := open("berth", "console", "--read-only", "c1")
	_ = step(w, "Connected to the console of machine c1. Press ^] three times within 1s to detach.", "") &&
		step(r, "Watching the console of machine c1 (read-only)", "") &&
		step(w, "", "\r") &&
		step(w, "c1 login: ", "root\r") &&
		step(w, "Password: ", "berth-test\r") &&
		step(w, "# ", "stty size; echo con$((6*7))sole\r") &&
		step(w, "24 80", "") &&
		step(r, "con42sole", "")
	if out, err := h.Exec(ctx, "berth", "console", "c1"); err == nil || !strings.Contains(string(out), `machine "c1": the console already has a writer (PID `) {
		t.Errorf("a second writer: %v\n%s", err, out)
	}
	_ = step(r, "", "\x03")
	ended(r)
	_ = step(w, "", "exit\r") && step(w, "c1 login: ", "\x1d\x1d\x1d") && step(w, "Detached from the console of machine c1; it keeps running.", "")
	ended(w)
	if out := exec("berth", "status", "c1", "-o", "json"); !strings.Contains(out, `"state": "running"`) && !strings.Contains(out, `"state":"running"`) {
		t.Errorf("c1 after the console's clients detached:\n%s", out)
	}

	// berth boot on a terminal types into its console: berth console
	// watches, and may not write.
	exec("sh", "-c", `cp -a /srv/busybox /var/tmp/bb && printf '::sysinit:/etc/init.d/rcS\n::respawn:-/bin/sh\n' > /var/tmp/bb/etc/inittab`)
	b := open("berth", "boot", "-D", "/var/tmp/bb", "--name", "bb")
	_ = step(b, "Press Ctrl-] three times within 1s to kill it.", "") &&
		step(b, "berth-busybox-booted", "echo boot-$((2*3))\r") &&
		step(b, "boot-6", "")
	r = open("berth", "console", "--read-only", "bb")
	_ = step(r, "Watching the console of machine bb (read-only)", "")
	if out, err := h.Exec(ctx, "berth", "console", "bb"); err == nil || !strings.Contains(string(out), "already has a writer (berth boot's terminal, PID ") {
		t.Errorf("berth console of a machine berth boot runs on a terminal: %v\n%s", err, out)
	}
	_ = step(b, "", "echo again-$((1+1))\r") && step(r, "again-2", "\x03")
	ended(r)
	exec("machinectl", "terminate", "bb") // busybox init takes no SIGRTMIN+4 (machinectl poweroff)
	_ = step(b, "Machine bb ended: ", "")
	ended(b)

	// A watcher sees the machine stop.
	r = open("berth", "console", "--read-only", "c1")
	_ = step(r, "Watching the console of machine c1", "")
	exec("berth", "stop", "c1")
	_ = step(r, "Machine c1 ended: ", "")
	ended(r)
}
