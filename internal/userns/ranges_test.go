package userns

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berthd/berth/internal/errdefs"
)

func testStore(t *testing.T, host ...Span) *Store {
	s := Open(t.TempDir())
	s.Host = func() ([]Span, error) { return host, nil }
	return s
}

// TestAssign: a picked range is derived from the name, kept across calls
// (and a new Store: berthd restarting), never another machine's; a pinned
// range is taken as given unless another machine or a host user holds it.
func TestAssign(t *testing.T) {
	s := testStore(t)
	web, err := s.Assign("web", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if web.Base < PickMin || web.Base >= PickMax || web.Base%Size != 0 {
		t.Fatalf("picked %v outside the pick range or unaligned", web)
	}
	again, _, _ := Open(filepath.Dir(s.dir)).Get("web")
	if again.Base != web.Base {
		t.Errorf("the range did not persist: %v, then %v", web, again)
	}
	// Another machine whose name hashes to web's slot gets the next one.
	s2 := testStore(t, Span{web.Base, web.End(), "user test"})
	other, err := s2.Assign("web", 0, false)
	if err != nil || other.Base != web.Base+Size {
		t.Errorf("a clash with a host span picked %v, %v; want %d", other, err, web.Base+Size)
	}

	db, err := s.Assign("db", 0, false)
	if err != nil || db.Base == web.Base {
		t.Fatalf("db: %v, %v", db, err)
	}
	if _, err := s.Assign("pin", web.Base, true); !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), `machine "web"'s`) {
		t.Errorf("pinning web's range: %v", err)
	}
	pin, err := s.Assign("pin", 0x10000*100, true)
	if err != nil || pin.Base != 0x10000*100 || !pin.Pinned {
		t.Fatalf("pin: %v, %v", pin, err)
	}
	// The definition changing from pinned to pick gives a picked range.
	if r, _ := s.Assign("pin", 0, false); r.Pinned || r.Base == pin.Base {
		t.Errorf("pick after pin: %v", r)
	}
	if err := s.Release("web"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Get("web"); ok {
		t.Error("released, still recorded")
	}
	if r, err := s.Assign("pin2", web.Base, true); err != nil || r.Base != web.Base {
		t.Errorf("a released range is free again: %v, %v", r, err)
	}
}

// TestHostSpans: the host's users above 65535 and its subordinate ranges
// are what a range must avoid; a pinned range over one is refused naming it.
func TestHostSpans(t *testing.T) {
	etc := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("passwd", "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nbig:x:600000:600000::/:/bin/sh\n# comment\n\n")
	write("group", "big:x:600001:\n")
	write("subuid", "alice:100000:65536\n")
	write("subgid", "alice:100000:65536\nbob:x:1\n")
	spans, err := HostSpans(etc)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range spans {
		got = append(got, s.What+"="+s.ids())
	}
	want := "user big=600000 group big=600001 subuid range of alice=100000-165535 subgid range of alice=100000-165535"
	if strings.Join(got, " ") != want {
		t.Errorf("HostSpans = %q\nwant        %q", strings.Join(got, " "), want)
	}
	s := Open(t.TempDir())
	s.Host = func() ([]Span, error) { return spans, nil }
	if _, err := s.Assign("m", 0x90000, true); err == nil || !strings.Contains(err.Error(), "the host's user big uses UIDs 600000") {
		t.Errorf("a pinned range over a host user: %v", err)
	}
	if _, err := s.Assign("m", 65536, true); err == nil || !strings.Contains(err.Error(), "subuid range of alice") {
		t.Errorf("a pinned range over a subuid range: %v", err)
	}
}

// TestCorruptStore: a damaged record is an error, never a fresh start that
// would hand one machine's files to another.
func TestCorruptStore(t *testing.T) {
	s := testStore(t)
	if _, err := s.Assign("web", 0, false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path(), []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Assign("db", 0, false); err == nil || !strings.Contains(err.Error(), "is corrupt") {
		t.Errorf("a corrupt store: %v", err)
	}
}

func TestPickLikeNspawn(t *testing.T) {
	NspawnLockDir = t.TempDir()
	s := testStore(t)
	// nspawn -U's first candidate for the name, while it is free.
	if r, err := s.Assign("ubuntu", 0, false); err != nil || r.Base != 238288896 {
		t.Fatalf("Assign(ubuntu) = %v, %v; want nspawn's 238288896", r, err)
	}
	// A range a running nspawn holds is skipped, and cannot be locked twice.
	l, err := LockRange(nspawnCandidate("web"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockRange(nspawnCandidate("web")); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("second LockRange = %v, want a conflict", err)
	}
	if r, err := s.Assign("web", 0, false); err != nil || r.Base != nspawnCandidate("web")+Size {
		t.Fatalf("Assign(web) with its range locked = %v, %v; want the next one", r, err)
	}
	l.Release()
	if _, err := os.Stat(filepath.Join(NspawnLockDir, strconv.Itoa(int(nspawnCandidate("web"))))); !os.IsNotExist(err) {
		t.Fatalf("lock file left after Release: %v", err)
	}
	l2, err := LockRange(nspawnCandidate("web"))
	if err != nil {
		t.Fatalf("LockRange after Release: %v", err)
	}
	l2.Release()
}

// TestAssignKeptWritesNothing: a start that finds its range recorded leaves
// ranges.json as it was (no rewrite, no fsyncs on the way to the init).
func TestAssignKeptWritesNothing(t *testing.T) {
	s := testStore(t)
	if _, err := s.Assign("web", 0, false); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(s.path())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Assign("web", 0, false); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(s.path())
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Error("ranges.json was rewritten although nothing changed")
	}
	if _, err := s.Assign("db", 0, false); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := s.Get("db"); !ok || got.Base == 0 {
		t.Errorf("a new machine's range was not recorded: %v %v", got, ok)
	}
}
