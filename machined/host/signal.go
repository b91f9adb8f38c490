package host

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The real-time signal range as the C library (and so systemd) numbers it: the
// kernel's first two are taken by glibc's threads.
const (
	sigRTMIN syscall.Signal = 34
	sigRTMAX syscall.Signal = 64
)

// parseSignal reads a signal as kill(1) and machinectl take it: a number, a
// name with or without SIG (TERM, SIGKILL, sigusr1), or RTMIN+N.
func parseSignal(s string) (syscall.Signal, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	if n, err := strconv.Atoi(t); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %d is out of range 1..64", n)
		}
		return syscall.Signal(n), nil
	}
	t = strings.TrimPrefix(t, "SIG")
	if rest, ok := strings.CutPrefix(t, "RTMIN"); ok {
		n := 0
		if rest != "" {
			var err error
			if n, err = strconv.Atoi(strings.TrimPrefix(rest, "+")); err != nil || n < 0 {
				return 0, fmt.Errorf("signal %q: want RTMIN+N", s)
			}
		}
		sig := sigRTMIN + syscall.Signal(n)
		if sig > sigRTMAX {
			return 0, fmt.Errorf("signal %q is beyond SIGRTMAX", s)
		}
		return sig, nil
	}
	if sig := unix.SignalNum("SIG" + t); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q (a name like TERM, KILL, USR1, RTMIN+3, or a number)", s)
}
