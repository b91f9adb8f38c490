package fsutil

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLock: shared holders do not exclude each other, an exclusive one waits
// for them and then excludes everyone, within one process too.
func TestLock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub.lock")
	free := func(how int) bool {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return unix.Flock(int(f.Fd()), how|unix.LOCK_NB) == nil
	}
	a, err := Lock(p, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Lock(p, false)
	if err != nil {
		t.Fatal("a second shared lock:", err)
	}
	if free(unix.LOCK_EX) {
		t.Fatal("an exclusive lock is free while shared ones are held")
	}
	got := make(chan func())
	go func() {
		u, err := Lock(p, true)
		if err != nil {
			t.Error(err)
		}
		got <- u
	}()
	a()
	b()
	var u func()
	select {
	case u = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the exclusive lock was not granted after the shared ones were dropped")
	}
	if free(unix.LOCK_SH) {
		t.Error("a shared lock is free while an exclusive one is held")
	}
	u()
	if !free(unix.LOCK_EX) {
		t.Error("unlock did not drop the lock")
	}
	if _, err := Lock(filepath.Join(p, "x"), true); err == nil {
		t.Error("a lock under a regular file was taken")
	}
}
