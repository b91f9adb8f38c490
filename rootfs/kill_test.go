package rootfs

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// childEnv makes the test binary import an archive and exit (TestMain in
// boot_test.go): the process the kill test SIGKILLs midway.
const childEnv = "BERTH_ROOTFS_TEST_IMPORT"

func startImportChild(t *testing.T, state, name, location string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+state+"|"+name+"|"+location)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// TestKilledImportLeavesNothing SIGKILLs imports at several moments: while the
// archive downloads (the server stalls halfway), and at a spread of times into
// a local import of the Debian tarball. After each, the store shows either no
// image or the complete one, never a partial directory, and the next Open
// removes the dead import's work directory.
func TestKilledImportLeavesNothing(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	state := filepath.Join(t.TempDir(), "state")
	if _, err := Open(state); err != nil {
		t.Fatal(err)
	}

	t.Run("stalled download", func(t *testing.T) {
		s := openStoreAt(t, state)
		tree := smallTree(t)
		// Make the archive big enough to be stalled halfway.
		writeFile(t, filepath.Join(tree, "big"), make([]byte, 8<<20))
		if _, err := s.Import(ctxT(t), "seed", Dir{Path: tree}, ImportOptions{}); err != nil {
			t.Fatal(err)
		}
		archive := filepath.Join(t.TempDir(), "a.tar")
		f, _ := os.Create(archive)
		if err := s.Export(ctxT(t), "seed", f, CompressNone); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := s.RemoveImage("seed"); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(archive)
		stall := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Write(data[:len(data)/2])
			w.(http.Flusher).Flush()
			<-stall
		}))
		defer srv.Close()
		defer close(stall)
		cmd := startImportChild(t, state, "victim", srv.URL+"/a.tar")
		// Wait until the child is extracting (its work directory has files).
		testenv.Eventually(t, 20*time.Second, func() error {
			if m, _ := filepath.Glob(filepath.Join(state, "images/.tmp/import-victim-*/rootfs/*")); len(m) == 0 {
				return errors.New("the import has not started extracting")
			}
			return nil
		})
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		checkNoPartial(t, state, "victim", false)
	})

	t.Run("local import at many moments", func(t *testing.T) {
		_, archive := debianTar(t)
		outcomes := map[string]int{}
		for i, delay := range []time.Duration{0, 50 * time.Millisecond, 300 * time.Millisecond, 800 * time.Millisecond, 1500 * time.Millisecond, 2500 * time.Millisecond, 4 * time.Second} {
			name := fmt.Sprintf("victim%d", i)
			cmd := startImportChild(t, state, name, archive)
			time.Sleep(delay)
			cmd.Process.Signal(syscall.SIGKILL)
			err := cmd.Wait()
			done := err == nil
			if !done {
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Fatalf("import child failed on its own: %v", err)
				}
			}
			outcome := checkNoPartial(t, state, name, done)
			outcomes[outcome]++
			t.Logf("killed after %v: %s", delay, outcome)
		}
		if outcomes["nothing"] == 0 {
			t.Error("no kill landed during the import; the test proves nothing")
		}
	})
}

// checkNoPartial reopens the store as the next process would and checks that
// name is either absent or complete and that no work directory is left.
func checkNoPartial(t *testing.T, state, name string, mayExist bool) string {
	t.Helper()
	s := openStoreAt(t, state)
	ents, _ := os.ReadDir(filepath.Join(state, "images/.tmp"))
	for _, e := range ents {
		t.Errorf("work directory left after Open: %s", e.Name())
	}
	img, err := s.Image(name)
	switch {
	case err == nil:
		// Complete: its tree hashes to its digest.
		sum, err := treeDigest(ctxT(t), img.Path, nil)
		if err != nil || sum.digest != img.Digest {
			t.Errorf("image %s is not complete: tree %s, recorded %s (%v)", name, sum.digest, img.Digest, err)
		}
		if _, err := s.RemoveImage(name); err != nil {
			t.Fatal(err)
		}
		return "complete"
	case errors.Is(err, ErrNotFound):
		if mayExist {
			t.Errorf("import exited 0 but image %s is missing", name)
		}
	default:
		t.Errorf("Image(%s) = %v", name, err)
	}
	// Content without a name may exist only if the kill hit between the rename
	// and the name's write; it must be complete, and Prune removes it.
	digests, _ := s.digests()
	for _, d := range digests {
		m, err := s.readDigest(d)
		if err != nil {
			t.Errorf("stored content %s has no metadata: %v", d, err)
			continue
		}
		if sum, err := treeDigest(ctxT(t), filepath.Join(s.digestDir(d), "rootfs"), nil); err != nil || sum.digest != m.Digest {
			t.Errorf("stored content %s is partial", d)
		}
	}
	if _, err := s.Prune(); err != nil {
		t.Fatal(err)
	}
	return "nothing"
}

func openStoreAt(t testing.TB, state string) *Store {
	t.Helper()
	s, err := Open(state)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
