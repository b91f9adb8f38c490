package rootfs

import (
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthd/berth/internal/testenv"
)

// TestDownloadIdleTimeout: a server that stops sending mid-body fails the
// import after the idle timeout, with a message saying so; one that sends
// slowly but steadily is not cut off.
func TestDownloadIdleTimeout(t *testing.T) {
	testenv.SkipUnlessRoot(t)
	defer func(d time.Duration) { downloadIdleTimeout = d }(downloadIdleTimeout)
	downloadIdleTimeout = 400 * time.Millisecond
	data := makeTar(t, dir("etc"), file("etc/os-release", "ID=x\n"+strings.Repeat("#\n", 32<<10)))
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		quarter := len(data) / 4
		for i := range 4 {
			w.Write(data[i*quarter : min((i+1)*quarter, len(data))])
			w.(http.Flusher).Flush()
			if r.URL.Path == "/stall.tar" && i == 1 {
				select { // stall until the client gives up
				case <-r.Context().Done():
				case <-release:
				}
				return
			}
			time.Sleep(150 * time.Millisecond) // slow, but within the idle timeout
		}
		w.Write(data[4*quarter:])
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	ctx, s := ctxT(t), openStore(t)

	start := time.Now()
	_, err := s.Import(ctx, "stall", Tar{Location: srv.URL + "/stall.tar"}, ImportOptions{})
	if err == nil || !strings.Contains(err.Error(), "no data from the server for 400ms") {
		t.Errorf("stalled download: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the stalled download took %v to fail", d)
	}
	if _, err := s.Import(ctx, "slow", Tar{Location: srv.URL + "/slow.tar"}, ImportOptions{}); err != nil {
		t.Errorf("slow but steady download: %v", err)
	}
}

// TestReadProgress: debootstrap's output is read to its end whatever its lines
// look like (a line over 64 KiB once stopped the reader and left debootstrap
// blocked on a full pipe), with the I: lines as progress and the last lines kept.
func TestReadProgress(t *testing.T) {
	cmd := exec.Command("sh", "-c", `echo "I: Retrieving a"; head -c 300000 /dev/zero | tr '\0' x; echo
for i in $(seq 1 20); do echo "line $i"; done; echo "I: Configuring b"; head -c 200000 /dev/zero`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	tail := readProgress(out, func(m string) { msgs = append(msgs, m) })
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("sh: %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the writer is still blocked after readProgress returned")
	}
	if !slices.Equal(msgs, []string{"Retrieving a", "Configuring b"}) {
		t.Errorf("messages %q", msgs)
	}
	if len(tail) != tailLines || tail[len(tail)-2] != "I: Configuring b" || len(tail[len(tail)-1]) != maxLineKept {
		t.Errorf("tail has %d lines, the last two %.40q", len(tail), tail[max(0, len(tail)-2):])
	}
}
