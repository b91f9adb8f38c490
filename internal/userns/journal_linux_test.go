package userns

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJournal: what one run wrote the next reads, a torn last line is
// ignored, another shift's journal is refused, and done removes it.
func TestJournal(t *testing.T) {
	p := filepath.Join(t.TempDir(), "shift.journal")
	j, err := openJournal(p, 0, 0x90000)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.add(fileKey{2049, 17}, savedMeta{mode: 0o4755}); err != nil {
		t.Fatal(err)
	}
	if err := j.add(fileKey{2049, 18}, savedMeta{mode: 0o755, caps: []byte{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	j.close()
	// A run that died writing its third line.
	f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("2049 19 47")
	f.Close()

	j, err = openJournal(p, 0, 0x90000)
	if err != nil {
		t.Fatal(err)
	}
	if m := j.saved[fileKey{2049, 17}]; m.mode != 0o4755 || m.caps != nil {
		t.Errorf("entry 17 = %+v", m)
	}
	if m := j.saved[fileKey{2049, 18}]; m.mode != 0o755 || string(m.caps) != "\x01\x02\x03" {
		t.Errorf("entry 18 = %+v", m)
	}
	if _, ok := j.saved[fileKey{2049, 19}]; ok || len(j.saved) != 2 {
		t.Errorf("the torn line was read: %+v", j.saved)
	}
	j.close()

	if _, err := openJournal(p, 0, 0xA0000); err == nil || !strings.Contains(err.Error(), "not the journal of this shift") {
		t.Errorf("another shift's journal: %v", err)
	}
	j, _ = openJournal(p, 0, 0x90000)
	if err := j.done(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("done left the journal: %v", err)
	}
}
