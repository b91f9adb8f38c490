package container

import (
	"errors"
	"fmt"
	"strings"

	"github.com/berthd/berth/internal/fsutil"

	"golang.org/x/sys/unix"
)

// mountOptionMax is what mount(2) copies of its data argument: one page, NUL
// included.
const mountOptionMax = 4096

// mountOverlay mounts an overlay of lower (uppermost first), upper and work
// at target: `mount -t overlay overlay -o lowerdir=…,upperdir=…,workdir=…`.
// An OCI image of many layers does not fit mount(2)'s one page of options
// (about 38 layers of the store's paths); then the layers go one by one
// through the new mount API's "lowerdir+" (Linux 6.8), which has no such
// limit, only overlayfs's own of 500 layers.
func mountOverlay(target string, lower []string, upper, work string) error {
	data := "lowerdir=" + strings.Join(lower, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(data) < mountOptionMax {
		return mount("overlay", target, "overlay", 0, data)
	}
	if err := fsmountOverlay(target, lower, upper, work); err != nil {
		return fmt.Errorf("overlay of %d layers (%d bytes of options: more than mount(2) takes) on %s: %w", len(lower), len(data), target, err)
	}
	return nil
}

// fsmountOverlay is mountOverlay by fsopen, fsconfig and fsmount.
func fsmountOverlay(target string, lower []string, upper, work string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fd)
	set := func(key, value string) error {
		if err := unix.FsconfigSetString(fd, key, value); err != nil {
			return fmt.Errorf("fsconfig %s=%s: %w%s", key, value, err, fsutil.ContextLog(fd))
		}
		return nil
	}
	for _, l := range lower {
		if err := set("lowerdir+", l); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("%w (lowerdir+ needs Linux 6.8)", err)
			}
			return err
		}
	}
	if err := set("upperdir", upper); err != nil {
		return err
	}
	if err := set("workdir", work); err != nil {
		return err
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("fsconfig create: %w%s", err, fsutil.ContextLog(fd))
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount: %w%s", err, fsutil.ContextLog(fd))
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount on %s: %w", target, err)
	}
	return nil
}
