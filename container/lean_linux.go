package container

import (
	"bufio"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// trimMemory shrinks the supervisor's resident set once the machine is up.
// There is one supervisor per machine and it idles for the machine's whole life,
// so what it touched while starting (the Go heap of setup, and the pages of the
// berth binary that startup and package initialisation faulted in, with the
// kernel's fault-around reading 64 KiB around each) should not stay charged to
// it. Heap goes back to the kernel; clean pages of the binary's read-only
// mappings are dropped from the page tables (MADV_DONTNEED on a private file
// mapping without a single dirty page only unmaps: the next touch maps the page
// again from the page cache). Mappings with any anonymous (copied-on-write)
// page, such as relocated read-only data, are left alone: dropping those would
// lose the relocations.
func trimMemory() {
	debug.FreeOSMemory()
	// The binary's mappings, known by device and inode: its path may be "/"
	// (a sealed, detached mount: see selfExe).
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return
	}
	dev := fmt.Sprintf("%02x:%02x", unix.Major(st.Dev), unix.Minor(st.Dev))
	ino := strconv.FormatUint(st.Ino, 10)
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return
	}
	defer f.Close()
	type region struct {
		start, end uintptr
		ok         bool
	}
	var cur *region
	var drop []region
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		fields := strings.Fields(l)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && len(fields[1]) == 4 {
			if cur != nil && cur.ok {
				drop = append(drop, *cur)
			}
			cur = nil
			if len(fields) >= 6 && fields[3] == dev && fields[4] == ino && fields[1][1] != 'w' {
				a, b, _ := strings.Cut(fields[0], "-")
				s, e1 := strconv.ParseUint(a, 16, 64)
				e, e2 := strconv.ParseUint(b, 16, 64)
				if e1 == nil && e2 == nil {
					cur = &region{start: uintptr(s), end: uintptr(e), ok: true}
				}
			}
			continue
		}
		if cur != nil && len(fields) >= 2 && fields[0] == "Anonymous:" && fields[1] != "0" {
			cur.ok = false
		}
	}
	if cur != nil && cur.ok {
		drop = append(drop, *cur)
	}
	for _, r := range drop {
		_, _, _ = unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_DONTNEED)
	}
}
