package host

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"github.com/berthd/berth/container"
	"github.com/berthd/berth/internal/rundir"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/spec"
)

// Describe adds the details of berth status that observe does not gather:
// resource usage from the cgroup and the console's last lines.
func (h *Host) Describe(ctx context.Context, st *api.MachineStatus) {
	if st.Cgroup != "" {
		if u, err := container.Usage(st.Cgroup); err == nil {
			st.Usage = map[string]any{"memory": spec.Size(u.MemoryBytes).String(), "tasks": u.Pids, "cpu": u.CPU.Round(time.Millisecond).String()}
		}
	}
	st.Console = tailLines(rundir.ConsoleLog(h.paths.LogDir, st.Name), 12)
}

// tailLines returns the last n lines of a file (a console log).
func tailLines(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	const window = 16 << 10
	off := max(0, st.Size()-window)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	text := strings.ReplaceAll(string(buf), "\r", "")
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if off > 0 && len(lines) > 0 {
		lines = lines[1:] // the first is probably cut
	}
	var out []string
	for _, l := range lines {
		if l = strings.TrimSpace(stripANSI(l)); l != "" {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// stripANSI removes terminal escape sequences (systemd colours its console).
func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
