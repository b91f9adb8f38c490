package container

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/berthd/berth/internal/rundir"
	"github.com/coreos/go-systemd/v22/daemon"
)

// listenNotify binds the sd_notify socket the guest sees as /run/host/notify.
func listenNotify(runDir string) (*net.UnixConn, error) {
	p := rundir.Dir(runDir).NotifySocket()
	_ = os.Remove(p)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	return c, nil
}

// maxNotifyStatus is how much of a STATUS= message state.json keeps.
const maxNotifyStatus = 256

func (s *supervisor) readNotify(c *net.UnixConn, ready chan<- struct{}) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(buf[:n]))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "STATUS="); ok {
				status := cleanGuestText([]byte(v), maxNotifyStatus)
				s.setState(func(st *State) { st.Status = status })
				continue
			}
			switch sc.Text() {
			case "READY=1":
				select {
				case ready <- struct{}{}:
				default:
				}
			case "STOPPING=1":
				s.setState(func(st *State) {
					if st.Phase != PhaseExited {
						st.Phase = PhaseStopping
					}
				})
			}
		}
	}
}

// notifyOwnManager passes the guest's READY=1 on to whoever started the
// supervisor with $NOTIFY_SOCKET (a Type=notify unit, a benchmark), as
// nspawn's --notify-ready=yes does. The variable stays set: the payload's
// environment is built (payloadEnv), never inherited, and a detached
// supervisor gets none (SpawnDetached leaves it out). An "@name" address is an
// abstract socket; Go's net package, which go-systemd dials with, maps the "@".
func notifyOwnManager(msg string) { _, _ = daemon.SdNotify(false, msg) }
