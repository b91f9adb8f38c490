package testenv

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TreeSum fingerprints the tree at dir: every path with its mode, size,
// owner, and modification and change times (not the access time: reading
// a tree is fine). Two sums differ when anything in the tree was written.
func TreeSum(t testing.TB, dir string) string {
	t.Helper()
	h := sha256.New()
	n := 0
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		n++
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(h, "%s %v %d %d:%d %v %v\n", p, fi.Mode(), fi.Size(), st.Uid, st.Gid, st.Mtim, st.Ctim)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d entries, sha256 %x", n, h.Sum(nil))
}
