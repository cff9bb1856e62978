#!/bin/sh
# Installs the Debian 12 packages tcast needs, only when one is missing.
# Used by `make`, `make test`, `make demo` and .ci/run.
set -eu
PKGS="cmake make gcc pkg-config libjansson-dev libyaml-dev libxxhash-dev
libssl-dev libcmocka-dev liburing-dev libmicrohttpd-dev libsystemd-dev
libsqlite3-dev openssl
python3 python3-numpy python3-pytest python3-torch python3-venv python3-pip
python3-setuptools python3-wheel librust-blake3-dev python3-hypothesis"
# iproute2: tests/integration/test_peer.sh (namespaces); iptables: its
# packet-loss lane (statistic match); iperf3: bench/peer_pull.sh
PKGS="$PKGS iproute2 iptables"
[ "${1:-}" = "--dev" ] && PKGS="$PKGS clang-14 libclang-rt-14-dev clang-format iperf3"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
