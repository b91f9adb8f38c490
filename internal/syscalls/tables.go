package syscalls

// entry is one system call of a table.
type entry struct {
	nr   int
	name string
}

// Table is one architecture's system calls.
type Table struct {
	Name  string
	Audit uint32 // AUDIT_ARCH_* as seccomp_data.arch has it
	calls []entry
	// newer are calls the upstream tables do not have yet (added in Linux
	// 6.17 to 6.19), by name.
	newer map[string]int
}

// Number returns name's number on the architecture, or -1.
func (t *Table) Number(name string) int {
	for _, e := range t.calls {
		if e.name == name {
			return e.nr
		}
	}
	if n, ok := t.newer[name]; ok {
		return n
	}
	return -1
}

// Max is the highest number the table knows: anything above it is newer than
// berth, and the filter answers ENOSYS for it, so that libraries fall back to
// older calls (glibc does for fchmodat2, clone3, …).
func (t *Table) Max() int {
	m := -1
	for _, e := range t.calls {
		m = max(m, e.nr)
	}
	for _, n := range t.newer {
		m = max(m, n)
	}
	return m
}

// Since Linux 5.1 new system calls have the same number on every
// architecture (uprobe is x86_64's own).
var unified = map[string]int{"file_getattr": 468, "file_setattr": 469, "listns": 470}

// The tables berth knows, with the AUDIT_ARCH value the kernel reports.
var (
	X86_64  = &Table{"x86_64", 0xc000003e, table_x86_64, merge(unified, map[string]int{"uprobe": 336})}
	I386    = &Table{"i386", 0x40000003, table_i386, unified}
	AARCH64 = &Table{"aarch64", 0xc00000b7, table_aarch64, unified}
	ARM     = &Table{"arm", 0x40000028, table_arm, unified}
	Tables  = []*Table{X86_64, I386, AARCH64, ARM}
)

func merge(a, b map[string]int) map[string]int {
	m := map[string]int{}
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}
