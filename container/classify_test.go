package container

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestClassify: what PID 1's end means, for every kind of end and init.
func TestClassify(t *testing.T) {
	exited := func(code int) syscall.WaitStatus { return syscall.WaitStatus(code << 8) }
	signaled := func(sig unix.Signal) syscall.WaitStatus { return syscall.WaitStatus(sig) }
	bit := func(sig unix.Signal) uint64 { return 1 << (uint(sig) - 1) }
	for _, tc := range []struct {
		name   string
		ws     syscall.WaitStatus
		how    payloadEnd
		reason string
		code   int
		reboot bool
	}{
		{"app exits 0", exited(0), payloadEnd{kind: "app"}, ReasonExited, 0, false},
		{"app exits 7", exited(7), payloadEnd{kind: "app"}, ReasonExited, 7, false},
		{"systemd exits 0: poweroff", exited(0), payloadEnd{kind: "systemd"}, ReasonPoweroff, 0, false},
		{"systemd exits 1", exited(1), payloadEnd{kind: "systemd"}, ReasonExited, 1, false},
		{"reboot(2) RESTART: SIGHUP", signaled(unix.SIGHUP), payloadEnd{kind: "systemd"}, "", 0, true},
		{"SIGHUP while stopping is a poweroff", signaled(unix.SIGHUP), payloadEnd{kind: "systemd", stopping: true}, ReasonPoweroff, 0, false},
		{"reboot(2) POWER_OFF: SIGINT", signaled(unix.SIGINT), payloadEnd{kind: "busybox"}, ReasonPoweroff, 0, false},
		{"a booted init that took berth's SIGHUP reboots", signaled(unix.SIGHUP), payloadEnd{kind: "init", requested: bit(unix.SIGHUP)}, "", 0, true},
		{"SIGHUP ends an app: crashed", signaled(unix.SIGHUP), payloadEnd{kind: "app"}, ReasonCrashed, 128 + 1, false},
		{"berth's kill of SIGTERM ends an app", signaled(unix.SIGTERM), payloadEnd{kind: "app", requested: bit(unix.SIGTERM)}, ReasonKilled, 128 + 15, false},
		{"SIGSEGV nobody sent: crashed", signaled(unix.SIGSEGV), payloadEnd{kind: "systemd", requested: bit(unix.SIGTERM)}, ReasonCrashed, 128 + 11, false},
		{"stop timeout or terminate: killed", signaled(unix.SIGKILL), payloadEnd{kind: "systemd", killed: true}, ReasonKilled, 128 + 9, false},
		{"killed wins over an exit code", exited(3), payloadEnd{kind: "app", killed: true}, ReasonKilled, 128 + 9, false},
		{"SIGKILL from outside berth: crashed", signaled(unix.SIGKILL), payloadEnd{kind: "app"}, ReasonCrashed, 128 + 9, false},
	} {
		st, reboot := classify(tc.ws, tc.how)
		if reboot != tc.reboot || st.Reason != tc.reason || st.Code != tc.code {
			t.Errorf("%s: %+v reboot %v; want %q %d reboot %v", tc.name, st, reboot, tc.reason, tc.code, tc.reboot)
		}
	}
}
