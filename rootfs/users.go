package rootfs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/berthd/berth/internal/userns"
	"golang.org/x/sys/unix"
)

// Shift records a directory root's one-time shift: on disk its files are
// owned by the range of 65536 IDs at Base, users and groups alike, because
// its filesystem could not be idmapped when the machine first started in a
// user namespace. Overlay roots are never shifted (their image layer is
// shared); a root without a Shift is owned 0…65535, as it was made.
type Shift struct {
	Base uint32 `json:"base"`
	// To is set while a shift from Base to To is under way. A crash leaves
	// it; the next PrepareUsers completes that shift before anything else.
	To *uint32 `json:"to,omitempty"`
	// Why says why the root is shifted rather than idmapped (what the
	// probe of its filesystem answered), for berth status.
	Why string    `json:"why,omitempty"`
	At  time.Time `json:"at"`
}

// Idmap says whether a machine may start where its root cannot be
// idmapped; the names are package spec's (Security.Idmap).
type Idmap string

const (
	// IdmapOptional (the default): shift the root's owners into the
	// machine's range once instead.
	IdmapOptional Idmap = "optional"
	// IdmapRequired: refuse to start.
	IdmapRequired Idmap = "required"
)

// Users is how a machine's root is mounted in its user namespace, as
// PrepareUsers decided (container.Users takes Base and Shifted).
type Users struct {
	Base uint32
	// Shifted: the root's files are owned from Base on disk already; mount
	// it as it is. Otherwise idmap its layers into the range.
	Shifted bool
	// Why says, for a shifted root, why it is not idmapped (berth status
	// shows it).
	Why string
}

// shiftStep is one shift a root needs, from one base to another.
type shiftStep struct{ from, to uint32 }

// PrepareUsers readies the machine's root for a start in the user namespace
// of the range at base and says how to mount it; machined calls it before
// every start. Base 0 means the host's own users (privateUsers: false): a
// root shifted before is shifted back then, so that it works as it was made.
//
//   - An overlay root is idmapped: its image layer and its upper directory
//     must be on filesystems that can be idmapped, on Linux 5.19 or newer.
//     Else it is refused whatever idmap says, because an image layer that
//     machines share can never be shifted in place.
//   - A directory root (the copy, reflink and btrfs strategies) is idmapped
//     where its filesystem allows it. Where not, it is shifted into the range
//     once and recorded (Root.Shift), or refused when idmap is
//     IdmapRequired. A root shifted to another base before is shifted by the
//     delta; one shifted to base stays so, even where idmap now works.
//
// The shift needs the root lock: it fails with ErrBusy while the machine
// runs. PrepareUsers also keeps STATE/machines 0700, so no host user can
// reach a set-user-ID file a guest made in its root.
func (s *Store) PrepareUsers(ctx context.Context, machine string, base uint32, idmap Idmap) (Users, error) {
	if err := s.keepMachinesPrivate(); err != nil {
		return Users{}, err
	}
	r, err := s.Root(machine)
	if err != nil {
		return Users{}, err
	}
	if r.Overlay != nil {
		return overlayUsers(r, base)
	}
	steps, u, err := planShift(r, base, idmap, userns.Probe)
	if err != nil || len(steps) == 0 {
		return u, err
	}
	lock, err := s.lockRoot(machine, "shift its owners")
	if err != nil {
		return Users{}, err
	}
	defer lock.Unlock()
	// Another process may have shifted it while this one waited.
	if r, err = s.Root(machine); err != nil {
		return Users{}, err
	}
	if steps, u, err = planShift(r, base, idmap, userns.Probe); err != nil {
		return u, err
	}
	for _, st := range steps {
		if err := s.shiftRoot(ctx, r, st, u.Why); err != nil {
			return Users{}, err
		}
	}
	return u, nil
}

// overlayUsers checks that an overlay root can be idmapped.
func overlayUsers(r *Root, base uint32) (Users, error) {
	if base == 0 {
		return Users{}, nil
	}
	err := userns.KernelSupportsIdmappedOverlay()
	// Idmapping is a filesystem's property: the layers of an OCI image, all
	// in the store, are probed once (a probe forks a namespace holder).
	probed := map[uint64]bool{}
	for _, dir := range append([]string{r.Overlay.Upper}, r.Overlay.Lower...) {
		var st unix.Stat_t
		if unix.Stat(dir, &st) == nil && probed[st.Dev] {
			continue
		}
		probed[st.Dev] = true
		if err == nil {
			err = userns.Probe(dir)
		}
	}
	if err != nil {
		return Users{}, errorf(ErrUnsupported, "machine %q: its overlay root cannot be idmapped into its user namespace: %v. "+
			"Its image layer is shared with other machines and is never shifted in place: "+
			"use root.strategy: copy (a root of its own, which berth shifts once), or privateUsers: false", r.Machine, err)
	}
	return Users{Base: base}, nil
}

// planShift decides for a directory root: the shifts it needs, in order (a
// shift a crash interrupted first), and how it is mounted after them. probe
// says whether the root's filesystem can be idmapped.
func planShift(r *Root, base uint32, idmap Idmap, probe func(string) error) ([]shiftStep, Users, error) {
	var steps []shiftStep
	var cur uint32
	why := ""
	if sh := r.Shift; sh != nil {
		cur, why = sh.Base, sh.Why
		if sh.To != nil {
			steps = append(steps, shiftStep{sh.Base, *sh.To})
			cur = *sh.To
		}
	}
	switch {
	case cur == base:
		return steps, Users{Base: base, Shifted: base != 0, Why: why}, nil
	case base == 0:
		// The host's users: back to the owners the root was made with.
		return append(steps, shiftStep{cur, 0}), Users{}, nil
	case cur != 0 && idmap == IdmapRequired:
		return nil, Users{}, errorf(ErrUnsupported, "machine %q: its root was shifted into the UID range at %d once (%s); moving it to the range at %d is another shift, "+
			"which security.idmap: required forbids: set security.idmap: optional, or pin privateUsers: %d", r.Machine, cur, why, base, cur)
	case cur != 0:
		return append(steps, shiftStep{cur, base}), Users{Base: base, Shifted: true, Why: why}, nil
	}
	err := probe(r.Dir)
	if err == nil {
		return steps, Users{Base: base}, nil
	}
	if idmap == IdmapRequired {
		return nil, Users{}, errorf(ErrUnsupported, "machine %q: its root cannot be idmapped into its user namespace: %v; "+
			"security.idmap: required forbids shifting its owners instead: set security.idmap: optional (berth then shifts them once), "+
			"or keep the state directory on a filesystem that can be idmapped (ext4, xfs, btrfs, tmpfs)", r.Machine, err)
	}
	return append(steps, shiftStep{0, base}), Users{Base: base, Shifted: true, Why: err.Error()}, nil
}

// shiftRoot runs one shift of a locked directory root: the target is
// recorded before it starts and the result after it ends, so that a crash
// in between is completed by the next PrepareUsers.
func (s *Store) shiftRoot(ctx context.Context, r *Root, st shiftStep, why string) error {
	to := st.to
	r.Shift = &Shift{Base: st.from, To: &to, Why: why, At: time.Now().UTC()}
	meta := filepath.Join(r.Path, rootMetaFile)
	if err := writeJSON(meta, r); err != nil {
		return fmt.Errorf("machine %q: %w", r.Machine, err)
	}
	slog.Info("rootfs: shifting the owners of a machine root", "machine", r.Machine, "from", st.from, "to", st.to, "why", why)
	start := time.Now()
	rep, err := userns.Shift(ctx, r.Dir, filepath.Join(r.Path, "shift.journal"), st.from, st.to)
	if err != nil {
		return fmt.Errorf("machine %q: %w (the next start completes the shift)", r.Machine, err)
	}
	if rep.Outside > 0 {
		slog.Warn("rootfs: files owned outside the range were left as they are (the machine sees them as nobody)",
			"machine", r.Machine, "ids", rep.Outside, "examples", rep.Examples)
	}
	if len(rep.Mounts) > 0 {
		slog.Warn("rootfs: mounts inside a machine root were not shifted", "machine", r.Machine, "mounts", rep.Mounts)
	}
	r.Shift = nil
	if st.to != 0 {
		r.Shift = &Shift{Base: st.to, Why: why, At: time.Now().UTC()}
	}
	if err := writeJSON(meta, r); err != nil {
		return fmt.Errorf("machine %q: %w", r.Machine, err)
	}
	slog.Info("rootfs: machine root shifted", "machine", r.Machine, "to", st.to, "files", rep.Entries,
		"changed", rep.Changed, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// keepMachinesPrivate makes sure STATE/machines is root's alone (0700): a
// guest's root makes set-user-ID files that are owned by host root (in an
// idmapped upper directory) or by the machine's root (in a shifted root),
// and no host user may reach them.
func (s *Store) keepMachinesPrivate() error {
	var st unix.Stat_t
	if err := unix.Stat(s.machines, &st); err != nil {
		return &os.PathError{Op: "stat", Path: s.machines, Err: err}
	}
	if st.Mode&0o7777 == 0o700 && st.Uid == 0 && st.Gid == 0 {
		return nil
	}
	slog.Warn("rootfs: machine roots' directory was open to other users; made it root's alone (0700)",
		"dir", s.machines, "mode", fmt.Sprintf("%04o", st.Mode&0o7777), "uid", st.Uid, "gid", st.Gid)
	if err := os.Chown(s.machines, 0, 0); err != nil {
		return err
	}
	return os.Chmod(s.machines, 0o700)
}

// ownLikeShift gives files berth made in a shifted root (the empty machine
// ID of a clone) the root's range, as everything else in it has, so that
// the guest owns them. The paths resolve inside the tree: a guest's symbolic
// link cannot lead out of it.
func ownLikeShift(tree string, sh *Shift, rels ...string) error {
	if sh == nil {
		return nil
	}
	root, err := unix.Open(tree, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: tree, Err: err}
	}
	defer unix.Close(root)
	for _, rel := range rels {
		fd, err := openInRoot(root, rel, unix.O_PATH|unix.O_NOFOLLOW)
		if err == unix.ENOENT {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "open", Path: filepath.Join(tree, rel), Err: err}
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		if err == nil && st.Uid < userns.Size && st.Gid < userns.Size {
			err = unix.Fchownat(fd, "", int(sh.Base+st.Uid), int(sh.Base+st.Gid), unix.AT_EMPTY_PATH)
		}
		unix.Close(fd)
		if err != nil {
			return &os.PathError{Op: "chown", Path: filepath.Join(tree, rel), Err: err}
		}
	}
	return nil
}
