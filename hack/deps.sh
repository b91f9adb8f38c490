#!/bin/sh
# Installs the Debian packages berth's build, demo and tests use. Idempotent;
# run as root on Debian 12. Go itself (1.26) must already be on the machine.
#
# `hack/deps.sh bench` also installs the peers only `make bench` compares
# berth with (LXC); `make test` never needs them. A peer that cannot be
# installed (no network) is a warning: its column then says "not installed".
set -eu

pkgs="debootstrap systemd-container busybox-static nftables iproute2 iperf3 \
      xz-utils zstd tar git ca-certificates curl util-linux procps btrfs-progs xfsprogs \
      runc umoci skopeo"
bench_pkgs="lxc"

# missing lists those of the packages given that are not installed.
missing() {
	m=""
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || m="$m $p"
	done
	echo "$m"
}

updated=""
apt_install() {
	echo "hack/deps.sh: installing $*"
	export DEBIAN_FRONTEND=noninteractive
	[ -n "$updated" ] || apt-get update -qq
	updated=1
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

m=$(missing $pkgs)
if [ -n "$m" ]; then
	apt_install $m
fi

if [ "${1:-}" = bench ]; then
	m=$(missing $bench_pkgs)
	if [ -n "$m" ]; then
		# LXC's packages would start lxc-net (a bridge with NAT on the host)
		# and autostart containers: the bench uses neither, so no service
		# starts during the install and neither is enabled after it.
		policy=""
		if [ ! -e /usr/sbin/policy-rc.d ]; then
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod +x /usr/sbin/policy-rc.d
			policy=1
		fi
		if apt_install $m; then
			systemctl disable --no-reload lxc-net.service lxc.service >/dev/null 2>&1 || true
		else
			echo "hack/deps.sh: warning: could not install$m; the bench shows them as not installed" >&2
		fi
		[ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
	fi
fi

if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		echo "hack/deps.sh: Go is at /usr/local/go/bin; add it to PATH" >&2
	else
		echo "hack/deps.sh: Go 1.26 is needed (https://go.dev/dl/) and was not found" >&2
	fi
	exit 1
fi
