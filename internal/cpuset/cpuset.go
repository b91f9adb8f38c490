// Package cpuset reads and writes CPU lists as the kernel spells them
// (cpuset.cpus, /sys/devices/system/cpu/online, Cpus_allowed_list: "0-3,8")
// and as systemd takes them over D-Bus (AllowedCPUs=, a little-endian bit
// mask of bytes).
package cpuset

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MaxCPU is the largest CPU number a list may name: the kernel's largest
// NR_CPUS (CONFIG_NR_CPUS_RANGE_END) less one.
const MaxCPU = 8191

// Set is a set of CPU numbers, sorted, each once.
type Set []int

// Parse reads a CPU list such as "0-3,8,10-11". Ranges are inclusive; blanks
// around items are allowed; an empty list is an error (no CPU to run on).
func Parse(s string) (Set, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("empty CPU list: name CPUs as in 0-3,8")
	}
	var set Set
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		lo, hi, isRange := strings.Cut(item, "-")
		a, err := cpuNumber(lo, item)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = cpuNumber(hi, item); err != nil {
				return nil, err
			}
			if b < a {
				return nil, fmt.Errorf("%q: a range goes from the lower CPU to the higher (%d-%d)", item, b, a)
			}
		}
		for c := a; c <= b; c++ {
			set = append(set, c)
		}
	}
	slices.Sort(set)
	return slices.Compact(set), nil
}

func cpuNumber(s, item string) (int, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.Atoi(s)
	if err != nil || s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("%q is not a CPU list item: use a CPU number (3) or a range (0-3)", item)
	}
	if n > MaxCPU {
		return 0, fmt.Errorf("%q: CPU %d is above the kernel's limit (%d)", item, n, MaxCPU)
	}
	return n, nil
}

// String formats the set the kernel's way, ranges collapsed: "0-3,8".
func (s Set) String() string {
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(s[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(s[j]))
		}
		i = j + 1
	}
	return b.String()
}

// Mask is the set as systemd's AllowedCPUs= D-Bus value: bit c%8 of byte c/8
// for each CPU c (cpu_set_to_dbus).
func (s Set) Mask() []byte {
	if len(s) == 0 {
		return []byte{}
	}
	m := make([]byte, s[len(s)-1]/8+1)
	for _, c := range s {
		m[c/8] |= 1 << (c % 8)
	}
	return m
}

// Union is every CPU in s or o.
func (s Set) Union(o Set) Set {
	u := slices.Concat(s, o)
	slices.Sort(u)
	return slices.Compact(u)
}

// Missing lists the CPUs of s that are not in o.
func (s Set) Missing(o Set) Set {
	var m Set
	for _, c := range s {
		if _, found := slices.BinarySearch(o, c); !found {
			m = append(m, c)
		}
	}
	return m
}
