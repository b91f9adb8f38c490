package container

import (
	"os"
	"strconv"
	"syscall"
	"testing"

	"github.com/berthd/berth/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestInMountNSLeavesTheProcess: however the runtime places inMountNS's
// goroutine, the process (its main thread, which /proc/self shows) stays in
// its own mount namespace, and fn runs in the other one.
func TestInMountNSLeavesTheProcess(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	own := nsIno(t, "/proc/self/ns/mnt")
	// Another mount namespace, kept by a descriptor only.
	fdc := make(chan int, 1)
	onOwnThread(func() {
		if unix.Unshare(unix.CLONE_FS|unix.CLONE_NEWNS) != nil {
			fdc <- -1
			return
		}
		fd, _ := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		fdc <- fd
	})
	other := <-fdc
	if other < 0 {
		t.Fatal("no mount namespace to join")
	}
	defer unix.Close(other)
	otherIno := nsIno(t, "/proc/self/fd/"+strconv.Itoa(other))
	for i := 0; i < 200; i++ {
		var in uint64
		if err := inMountNS(other, func() error { in = nsIno(t, "/proc/thread-self/ns/mnt"); return nil }); err != nil {
			t.Fatal(err)
		}
		if in != otherIno {
			t.Fatalf("run %d: fn ran in mount namespace %d, want %d", i, in, otherIno)
		}
		if got := nsIno(t, "/proc/self/ns/mnt"); got != own {
			t.Fatalf("run %d: the process's mount namespace is now %d, was %d", i, got, own)
		}
	}
}

func nsIno(t *testing.T, p string) uint64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}
