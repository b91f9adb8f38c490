package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/berthd/berth/internal/rundir"

	"github.com/berthd/berth/internal/fsutil"
	"golang.org/x/sys/unix"
)

// Environment of a detached supervisor stage.
const (
	runDirEnv  = "_BERTH_RUNTIME_DIR"
	readyFDEnv = "_BERTH_READY_FD"
)

// SpawnDetached starts a supervisor for cfg that outlives the caller: it writes
// RUN/machines/NAME/config.json, re-executes this binary in stage (a stage that
// calls SuperviseStage) in a session of its own with its output in
// RuntimeDir/supervisor.log, and waits until the payload has started (returns
// the supervisor's PID) or the supervisor failed (returns its error).
func SpawnDetached(ctx context.Context, cfg Config, stage string) (int, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return 0, err
	}
	if _, ok := stages[stage]; !ok {
		return 0, fmt.Errorf("machine %q: no stage %q is registered in this binary", cfg.Name, stage)
	}
	if err := os.MkdirAll(cfg.RuntimeDir, 0o700); err != nil {
		return 0, fmt.Errorf("machine %q: runtime directory: %w", cfg.Name, err)
	}
	// A supervisor whose machine has ended may still be removing its cgroup: a
	// start right after (a restart) waits for it rather than failing.
	if err := WaitSupervisorGone(ctx, cfg.RuntimeDir, 15*time.Second); err != nil {
		return 0, fmt.Errorf("machine %q: %w", cfg.Name, err)
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := fsutil.WriteFileAtomic(rundir.Dir(cfg.RuntimeDir).Config(), append(b, '\n'), 0o600); err != nil {
		return 0, fmt.Errorf("machine %q: write config: %w", cfg.Name, err)
	}
	_ = os.Remove(rundir.Dir(cfg.RuntimeDir).State())
	logf, err := os.OpenFile(rundir.Dir(cfg.RuntimeDir).SupervisorLog(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("machine %q: supervisor log: %w", cfg.Name, err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd := StageCommand(stage, "berth-supervisor "+cfg.Name, runDirEnv+"="+cfg.RuntimeDir, readyFDEnv+"=3")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		w.Close()
		return 0, fmt.Errorf("machine %q: start supervisor: %w", cfg.Name, execFailure(err))
	}
	w.Close()
	pid := cmd.Process.Pid
	// Reap it whenever it ends, so no zombie stays behind in a long-lived caller.
	go func() { _ = cmd.Wait() }()

	stop := context.AfterFunc(ctx, func() { _ = r.SetReadDeadline(time.Now()) })
	defer stop()
	var msg bytes.Buffer
	_, rerr := msg.ReadFrom(r)
	text := strings.TrimSpace(msg.String())
	switch {
	case text == "ok":
		return pid, nil
	case strings.HasPrefix(text, "error: "):
		return 0, errors.New(strings.TrimPrefix(text, "error: "))
	case ctx.Err() != nil:
		return pid, fmt.Errorf("machine %q: waiting for the supervisor (PID %d, still starting): %w", cfg.Name, pid, ctx.Err())
	}
	if st, err := ReadState(cfg.RuntimeDir); err == nil && st.Exit != nil && st.Exit.Error != "" {
		return 0, errors.New(st.Exit.Error)
	}
	tail, _ := os.ReadFile(rundir.Dir(cfg.RuntimeDir).SupervisorLog())
	if len(tail) > 2000 {
		tail = tail[len(tail)-2000:]
	}
	return 0, fmt.Errorf("machine %q: the supervisor ended before the machine started (%v); its log:\n%s", cfg.Name, rerr, tail)
}

// StageCommand is this binary (or berth-stage, see selfExe) re-executed in
// stage, detached: in a session
// of its own, in /, named argv0 in ps, with the caller's environment less
// berth's own stage variables and NOTIFY_SOCKET (berthd's, not the stage's),
// plus env.
func StageCommand(stage, argv0 string, env ...string) *exec.Cmd {
	var full []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "_BERTH_") && !strings.HasPrefix(e, "NOTIFY_SOCKET=") {
			full = append(full, e)
		}
	}
	full = append(full, stageEnv+"="+stage)
	return &exec.Cmd{
		Path:        selfExe(),
		Args:        []string{argv0},
		Env:         stageRuntimeEnv(append(full, env...), ""),
		Dir:         "/",
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
}

// LoadDetachedConfig reads the config of the detached supervisor this process
// is (inside a stage started by SpawnDetached).
func LoadDetachedConfig() (Config, error) {
	var cfg Config
	dir := os.Getenv(runDirEnv)
	if dir == "" {
		return cfg, errors.New("not a detached supervisor: " + runDirEnv + " is not set")
	}
	b, err := os.ReadFile(rundir.Dir(dir).Config())
	if err != nil {
		return cfg, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w", rundir.Dir(dir).Config(), err)
	}
	return cfg, nil
}

// SuperviseStage is the body of a detached supervisor stage: it loads the
// config SpawnDetached wrote, lets hooks (may be nil) build the wiring for it,
// supervises the machine and exits with the machine's exit code. It tells
// SpawnDetached when the payload has started, or why it failed.
func SuperviseStage(hooks func(ctx context.Context, cfg Config) (Hooks, error)) {
	// No WarmCgroupMoves: berthd starts machines many at a time, and the
	// no-op moves cost every booting guest more than they save (see warm).
	// One supervisor per machine: keep it lean. Its heap is tiny and steady,
	// so collecting early costs little and keeps the RSS near the live set.
	debug.SetGCPercent(25)
	debug.SetMemoryLimit(16 << 20)
	signal.Ignore(unix.SIGHUP, unix.SIGPIPE)

	ready := os.NewFile(3, "ready")
	reported := false
	report := func(msg string) {
		if !reported {
			reported = true
			_, _ = ready.WriteString(msg + "\n")
			ready.Close()
		}
	}
	cfg, err := LoadDetachedConfig()
	if err != nil {
		report("error: " + err.Error())
		os.Exit(1)
	}
	ctx := context.Background()
	h := Hooks{}
	if hooks != nil {
		if h, err = hooks(ctx, cfg); err != nil {
			report("error: " + err.Error())
			os.Exit(1)
		}
	}
	started := h.Started
	h.Started = func(ctx context.Context, s Started) error {
		if started != nil {
			if err := started(ctx, s); err != nil {
				return err
			}
		}
		report("ok")
		return nil
	}
	st, err := Supervise(ctx, cfg, h)
	if err != nil {
		report("error: " + err.Error())
	}
	os.Exit(st.Code)
}
