#!/bin/sh
# Installs the Debian packages berth's build, demo and tests use. Idempotent;
# run as root on Debian 12. Go itself (1.26) must already be on the machine.
set -eu

pkgs="debootstrap systemd-container busybox-static nftables iproute2 iperf3 \
      xz-utils zstd tar git ca-certificates curl util-linux procps btrfs-progs xfsprogs \
      runc umoci skopeo"

missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "hack/deps.sh: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		echo "hack/deps.sh: Go is at /usr/local/go/bin; add it to PATH" >&2
	else
		echo "hack/deps.sh: Go 1.26 is needed (https://go.dev/dl/) and was not found" >&2
	fi
	exit 1
fi
