#!/bin/sh
# What a new user checks after the README's main job, run by CI after `make
# test` on the clean clone: `make demo` brings every example machine to
# running, the web machine answers through its port forward on localhost (both
# loopback families), machines resolve each other by name, `berth plan
# examples/` has nothing left to do; then `make demo-down` takes away the
# bridge, berth's nftables tables, the veths, the supervisors, the network's
# resolver, their cgroups and every mount the demo made.
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
BERTH=$(pwd)/bin/berth

say() { printf '\n==> demo-check: %s\n' "$*"; }
fail() {
	printf 'demo-check: FAIL: %s\n' "$*" >&2
	"$BERTH" list 2>&1 || true
	[ -f /var/log/berth/berthd.log ] && tail -n 40 /var/log/berth/berthd.log >&2
	exit 1
}

mounts() { awk '{print $5}' /proc/self/mountinfo | sort; }
mounts >/tmp/demo-check.mounts.before

make demo

say "every example machine is running"
# Every machine the examples declare: NAME, or NAME-1 … NAME-N for a
# template with copies: N.
machines=$(awk '
	function flush() { if (name != "") { if (copies > 0) for (i = 1; i <= copies; i++) print name "-" i; else print name } name = ""; copies = 0 }
	FNR == 1 || /^---/ { flush() }
	/^name:/ { name = $2 }
	/^copies:/ { copies = $2 }
	END { flush() }' examples/machines/*.yaml | sort)
[ -n "$machines" ] || fail "no machines in examples/machines"
i=0
while :; do
	json=$("$BERTH" list -o json)
	pending=""
	for m in $machines; do
		printf '%s' "$json" | tr -d ' \n' | grep -q "\"name\":\"$m\",\"state\":\"running\"" || pending="$pending $m"
	done
	[ -z "$pending" ] && break
	i=$((i + 1))
	[ "$i" -gt 600 ] && fail "not running after 60 s:$pending"
	sleep 0.1
done
"$BERTH" list

say "the port forward answers on localhost, 127.0.0.1 and [::1]"
want="hello from the berth example machine web"
for url in http://localhost:8080/ http://127.0.0.1:8080/ 'http://[::1]:8080/'; do
	i=0
	until curl -fsS --max-time 2 "$url" 2>/dev/null | grep -q "$want"; do
		i=$((i + 1))
		[ "$i" -gt 100 ] && fail "$url does not answer with \"$want\""
		sleep 0.2
	done
	echo "ok: $url"
done

say "machines find each other by name through the network's resolver"
i=0
until "$BERTH" shell alpha -- getent hosts beta.berth 2>/dev/null | grep -q '^10\.87\.0\.12 '; do
	i=$((i + 1))
	[ "$i" -gt 50 ] && fail "alpha cannot resolve beta.berth: $("$BERTH" shell alpha -- getent hosts beta.berth 2>&1)"
	sleep 0.2
done
"$BERTH" shell alpha -- getent hosts beta.berth
"$BERTH" shell alpha -- getent hosts 10.87.0.12 | grep -q 'beta\.berth' || fail "alpha cannot look 10.87.0.12 up by address"
echo "ok: beta.berth and 10.87.0.12 from alpha"

say "berth plan examples/ has nothing to do"
if ! "$BERTH" plan examples/; then
	fail "berth plan examples/ exited $? after the demo"
fi

bridge=$("$BERTH" network list -o json | tr -d ' \n' | sed -n 's/.*"bridge":"\([^"]*\)".*/\1/p')
[ -n "$bridge" ] || fail "no bridge in berth network list"

make demo-down

say "nothing of the demo is left"
ip link show "$bridge" >/dev/null 2>&1 && fail "bridge $bridge is still there"
if ip -o link show | grep -q ': vb-'; then fail "machine veths are still there: $(ip -o link show | grep ': vb-')"; fi
nft list table inet berth >/dev/null 2>&1 && fail "nftables table inet berth is still there"
nft list table bridge berth >/dev/null 2>&1 && fail "nftables table bridge berth is still there"
for m in $machines; do
	for d in /sys/fs/cgroup/*/berth/"$m" /sys/fs/cgroup/berth/"$m"; do
		[ -d "$d" ] && fail "cgroup $d is still there"
	done
	[ -S /run/berth/machines/"$m"/control.sock ] && fail "machine $m still has a supervisor socket"
	# The demo's own supervisors: tests on the same host may run machines of theirs.
	if ps -eo args | grep -qx "berth-supervisor $m"; then fail "the supervisor of $m is still running: $(ps -eo pid,args | grep -x "[0-9 ]*berth-supervisor $m")"; fi
done
if ps -eo args | grep -q '^berth-dns '; then fail "network resolvers are still running: $(ps -eo pid,args | grep 'berth-dns ')"; fi
mounts >/tmp/demo-check.mounts.after
if ! diff /tmp/demo-check.mounts.before /tmp/demo-check.mounts.after; then
	fail "mounts changed across the demo (above: < gone, > new)"
fi
rm -f /tmp/demo-check.mounts.before /tmp/demo-check.mounts.after
say "ok"
