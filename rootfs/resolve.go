package rootfs

import (
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Resolving a path inside a tree as if the tree were "/": how the extractor and
// the copier reach a directory without following a symlink out of their
// destination.

// resolveInRoot opens the directory rel (relative, "" for root itself) inside the
// tree rooted at the descriptor root, resolving symlinks and ".." as if root were
// "/", and returns an O_PATH descriptor of it.
func resolveInRoot(root int, rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	if !haveOpenat2() {
		return resolveInRootSlow(root, rel)
	}
	return openInRoot(root, rel, unix.O_PATH|unix.O_DIRECTORY)
}

// openInRoot is openat2 of rel relative to root with flags (O_CLOEXEC
// added), symbolic links and ".." resolved as if root were "/", magic links
// (/proc/self/…) not at all. A lookup a rename elsewhere on the filesystem
// raced (EAGAIN) is tried again, a bounded number of times, so a tree being
// renamed without end gets the error.
func openInRoot(root int, rel string, flags int) (int, error) {
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(root, rel, how)
		if (err != unix.EAGAIN && err != unix.EINTR) || i == 100 {
			return fd, err
		}
	}
}

// forceSlowResolve makes resolveInRoot use the userspace walk (tests run the
// hostile-archive suite both ways).
var forceSlowResolve bool

var openat2Once = sync.OnceValue(func() bool {
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
	if err != nil {
		// ENOSYS before Linux 5.6, EPERM or ENOSYS under some seccomp filters.
		return false
	}
	unix.Close(fd)
	return true
})

func haveOpenat2() bool { return !forceSlowResolve && openat2Once() }

// resolveInRootSlow is resolveInRoot for kernels without openat2 (before 5.6):
// the same walk done one element at a time with O_NOFOLLOW, symlinks expanded by
// hand and ".." clamped at the root. It is only safe because nothing else writes
// to the tree meanwhile, which holds for the extractor's destination.
func resolveInRootSlow(root int, rel string) (int, error) {
	var stack []string // the resolved path as elements
	todo := strings.Split(rel, "/")
	links := 0
	for len(todo) > 0 {
		el := todo[0]
		todo = todo[1:]
		switch el {
		case "", ".":
			continue
		case "..":
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		cur := strings.Join(append(append([]string{}, stack...), el), "/")
		var st unix.Stat_t
		if err := unix.Fstatat(root, cur, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return -1, err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			links++
			if links > 40 {
				return -1, unix.ELOOP
			}
			buf := make([]byte, maxPathLen+1)
			k, err := unix.Readlinkat(root, cur, buf)
			if err != nil {
				return -1, err
			}
			target := string(buf[:k])
			if strings.HasPrefix(target, "/") {
				stack = nil
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return -1, unix.ENOTDIR
		}
		stack = append(stack, el)
	}
	// Every element of stack is a real directory (checked above), so opening the
	// joined path follows no symlink.
	p := strings.Join(stack, "/")
	if p == "" {
		p = "."
	}
	return unix.Openat(root, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}
