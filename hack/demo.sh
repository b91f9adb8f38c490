#!/bin/sh
# The README's main job: build berth, make the example image, apply examples/ and
# show `berth list`. `hack/demo.sh down` undoes it: the example machines stop,
# their bridge and berth's nftables tables go away (their roots stay, as data
# always does; `berth remove --delete-data NAME` deletes one).
#
# With systemd as PID 1, berthd is installed as a service (berth install);
# without it (a container, a CI VM), berthd runs in the background with its log
# in /var/log/berth/berthd.log.
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
BERTH=$(pwd)/bin/berth
BERTHD=$(pwd)/bin/berthd
PIDFILE=/run/berth/demo-berthd.pid

say() { printf '\n==> %s\n' "$*"; }

daemon_running() {
	"$BERTH" status -o json 2>/dev/null | grep -q '"daemon": true'
}

start_daemon() {
	if daemon_running; then
		return
	fi
	if [ -d /run/systemd/system ]; then
		say "installing berthd as a systemd service (berth install)"
		"$BERTH" install
		systemctl start berthd.service
	else
		say "starting berthd in the background (no systemd here); log: /var/log/berth/berthd.log"
		mkdir -p /var/log/berth /run/berth
		setsid "$BERTHD" >>/var/log/berth/berthd.log 2>&1 </dev/null &
		echo $! >"$PIDFILE"
	fi
	i=0
	until daemon_running; do
		i=$((i + 1))
		if [ "$i" -gt 100 ]; then
			echo "berthd did not come up; see /var/log/berth/berthd.log" >&2
			exit 1
		fi
		sleep 0.1
	done
}

up() {
	say "validating examples/"
	"$BERTH" validate examples/
	start_daemon
	say "building the example image (debootstrap; about a minute the first time)"
	"$BERTH" image build -f examples/images/debian12.yaml
	mkdir -p /var/lib/berth-examples/www
	# web's login.motd credential (examples/machines/web.yaml).
	[ -e /var/lib/berth-examples/web.motd ] || echo "welcome to the berth example machine web" >/var/lib/berth-examples/web.motd
	if [ ! -e /var/lib/berth-examples/www/index.html ]; then
		echo "<h1>hello from the berth example machine web</h1>" >/var/lib/berth-examples/www/index.html
	fi
	say "berth plan examples/"
	"$BERTH" plan examples/ || [ $? -eq 2 ]
	say "berth apply examples/"
	"$BERTH" apply examples/
	say "berth list"
	"$BERTH" list
	say "berth network list"
	"$BERTH" network list
	say "waiting for web to finish booting, then fetching http://localhost:8080/ (a port forward)"
	i=0
	until "$BERTH" list -o json | grep -A1 '"name": "web"' | grep -q '"state": "running"'; do
		i=$((i + 1))
		[ "$i" -gt 100 ] && break
		sleep 0.1
	done
	# "running" is the guest's READY=1 (basic.target); lighttpd comes a moment later.
	if command -v curl >/dev/null 2>&1; then
		i=0
		until curl -sS --max-time 2 http://localhost:8080/ 2>/dev/null; do
			i=$((i + 1))
			if [ "$i" -gt 50 ]; then
				echo "(web does not answer on localhost:8080 yet; try: curl http://localhost:8080/)"
				break
			fi
			sleep 0.2
		done
	fi
	cat <<'EOF'

Try:  bin/berth status web          bin/berth shell web
      bin/berth shell alpha ping -c1 beta   (or beta.berth, 10.87.0.12)
      bin/berth logs -f hello       bin/berth events
Undo: make demo-down
EOF
}

down() {
	if ! daemon_running; then
		start_daemon
	fi
	say "forgetting examples/: the example machines stop, their network and rules go"
	"$BERTH" apply --forget examples/ || true
	"$BERTH" list
	if [ -f "$PIDFILE" ]; then
		say "stopping the background berthd (machines are already down)"
		kill "$(cat "$PIDFILE")" 2>/dev/null || true
		rm -f "$PIDFILE"
	fi
}

case "${1:-up}" in
up) up ;;
down) down ;;
*)
	echo "usage: hack/demo.sh [up|down]" >&2
	exit 2
	;;
esac
