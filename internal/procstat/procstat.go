// Package procstat identifies a process across PID reuse: its PID with the
// time it started, as /proc/PID/stat gives it.
package procstat

import (
	"errors"
	"os"
	"strconv"
	"strings"
)

// StartTime returns field 22 of /proc/PID/stat: when the process started, in
// clock ticks after boot.
func StartTime(pid int) (uint64, error) {
	_, start, err := stat(pid)
	return start, err
}

// stat returns the state (field 3) and the start time of process pid.
func stat(pid int) (state string, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields are
	// counted after its last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return "", 0, errors.New("malformed /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return "", 0, errors.New("short /proc/PID/stat")
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0], start, err
}

// Alive reports whether the process pid runs and is the one that started at
// start (a reused PID is not). A zombie, ended but not yet reaped by its
// parent, is not alive.
func Alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	state, st, err := stat(pid)
	return err == nil && st == start && state != "Z" && state != "X"
}
