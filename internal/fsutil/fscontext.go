package fsutil

import (
	"strings"

	"golang.org/x/sys/unix"
)

// ContextLog returns the messages the kernel left on a filesystem context
// of fsopen ("e overlayfs: …"), for an error: " (MESSAGE; MESSAGE)", or "".
func ContextLog(fd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 16 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	if len(msgs) == 0 {
		return ""
	}
	return " (" + strings.Join(msgs, "; ") + ")"
}
