package userns

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Span is a run of IDs [First, Last] and what holds it.
type Span struct {
	First, Last uint32
	What        string // "user alice", "subuid range of bob", "machine web"
}

func (s Span) overlaps(o Span) bool { return s.First <= o.Last && o.First <= s.Last }

func (s Span) ids() string {
	if s.First == s.Last {
		return strconv.FormatUint(uint64(s.First), 10)
	}
	return fmt.Sprintf("%d-%d", s.First, s.Last)
}

// HostSpans lists the IDs the host's own users and groups hold (etc/passwd,
// etc/group) and the ranges it delegates to users (etc/subuid, etc/subgid),
// above 65535: a machine's range must not give a guest a host user's files.
// A missing file holds nothing.
func HostSpans(etc string) ([]Span, error) {
	var out []Span
	for _, f := range []struct{ file, what string }{{"passwd", "user"}, {"group", "group"}} {
		err := readColon(filepath.Join(etc, f.file), func(fields []string) {
			if len(fields) < 3 {
				return
			}
			if id, err := strconv.ParseUint(fields[2], 10, 32); err == nil && id >= Size {
				out = append(out, Span{uint32(id), uint32(id), f.what + " " + fields[0]})
			}
		})
		if err != nil {
			return nil, err
		}
	}
	for _, f := range []string{"subuid", "subgid"} {
		err := readColon(filepath.Join(etc, f), func(fields []string) {
			if len(fields) < 3 {
				return
			}
			first, err1 := strconv.ParseUint(fields[1], 10, 32)
			n, err2 := strconv.ParseUint(fields[2], 10, 32)
			if err1 == nil && err2 == nil && n > 0 && first+n-1 <= 1<<32-1 {
				out = append(out, Span{uint32(first), uint32(first + n - 1), f + " range of " + fields[0]})
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readColon calls fn with the fields of each line of a colon-separated file,
// comments and blank lines skipped.
func readColon(path string, fn func([]string)) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fn(strings.Split(line, ":"))
	}
	return sc.Err()
}
