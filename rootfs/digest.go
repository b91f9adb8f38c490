package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"

	"github.com/berthd/berth/rootfs/hold"
	"golang.org/x/sys/unix"
)

// An image's digest is "sha256:" and the SHA-256 of its manifest: one line per
// file in walkTree's order with everything an import keeps (type, mode with the
// setuid/setgid/sticky bits, numeric owner, mtime, size and content hash, link
// target, device numbers, hard-link sibling, xattrs). So the digest names exactly
// the tree that is stored, whatever the source was: the same tree from a
// directory, an archive of it or an exported copy has the same digest, and an
// archive that unpacks differently (other owners, dropped xattrs) does not.
// Hashing a 250 MB tree costs about a second on this hardware; the archive's own
// hash is checked separately when the user gives one.

// manifestVersion heads the manifest; changing the format changes every digest.
const manifestVersion = "berth-manifest-v1\n"

// treeSum is what treeDigest learns about a tree in one walk.
type treeSum struct {
	digest string // sha256:HEX
	size   int64  // disk usage, each inode once
	files  int64
	bytes  int64 // file data hashed
}

// treeDigest walks the tree at root and returns its digest and size. progress, if
// not nil, is called with the bytes hashed so far.
func treeDigest(ctx context.Context, root string, progress func(done int64)) (treeSum, error) {
	h := sha256.New()
	fh := sha256.New()
	first := map[inode]string{}
	var sum treeSum
	var done int64
	buf := make([]byte, 1<<20)
	io.WriteString(h, manifestVersion)
	err := walkTree(ctx, root, func(n *node) error {
		var line strings.Builder
		if n.rel == "" {
			line.WriteString(".")
		} else {
			line.WriteString(strconv.Quote(n.rel))
		}
		st := &n.st
		fmt.Fprintf(&line, " %s %04o %d:%d %d.%09d", typeLetter(st.Mode), st.Mode&07777, st.Uid, st.Gid, st.Mtim.Sec, st.Mtim.Nsec)
		if st.Nlink > 1 && !n.isDir() {
			k := inode{st.Dev, st.Ino}
			if f, ok := first[k]; ok {
				fmt.Fprintf(&line, " link=%s\n", strconv.Quote(f))
				_, err := io.WriteString(h, line.String())
				return err
			}
			first[k] = n.rel
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			fh.Reset()
			k, err := hashFile(n, fh, buf)
			if err != nil {
				return err
			}
			done += k
			if progress != nil {
				progress(done)
			}
			fmt.Fprintf(&line, " size=%d sha256=%s", k, hex.EncodeToString(fh.Sum(nil)))
		case unix.S_IFLNK:
			t, err := n.readlink()
			if err != nil {
				return err
			}
			fmt.Fprintf(&line, " target=%s", strconv.Quote(t))
		case unix.S_IFCHR, unix.S_IFBLK:
			fmt.Fprintf(&line, " dev=%d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		xs, err := n.xattrs()
		if err != nil {
			return err
		}
		for _, x := range xs {
			fmt.Fprintf(&line, " xattr.%s=%s", x.name, base64.StdEncoding.EncodeToString(x.value))
		}
		line.WriteByte('\n')
		sum.size += st.Blocks * 512
		sum.files++
		_, err = io.WriteString(h, line.String())
		return err
	}, nil)
	if err != nil {
		return treeSum{}, err
	}
	sum.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	sum.bytes = done
	return sum, nil
}

func hashFile(n *node, h hash.Hash, buf []byte) (int64, error) {
	f, err := n.open()
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	for {
		k, err := f.Read(buf)
		h.Write(buf[:k])
		total += int64(k)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func typeLetter(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "f"
	case unix.S_IFDIR:
		return "d"
	case unix.S_IFLNK:
		return "l"
	case unix.S_IFCHR:
		return "c"
	case unix.S_IFBLK:
		return "b"
	case unix.S_IFIFO:
		return "p"
	}
	return "?"
}

// validDigest reports whether d has the form sha256:HEX.
func validDigest(d string) bool { return hold.ValidDigest(d) }
