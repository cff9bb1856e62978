#!/bin/bash
# The weight publisher across nodes: a global store, a publisher node and N
# receiver nodes, each a network namespace (one veth on a private bridge)
# with its own daemon; the e2e harness (python -m
# tcast.tools.weight_publisher_e2e) publishes on node 0 and receives on the
# others, pulling peer to peer.  One case per receiver count and lane:
#   baseline     receivers pull from the publisher only (--peers)
#   progressive  receivers pull from whatever the global store names: the
#                publisher and every receiver that already holds the version
#                (TC_WP_PROGRESSIVE_ENABLE=1)
#   failure      the progressive topology at the largest count, and the daemon of
#                TC_WP_FAILURE_INJECTION_TARGET (receiver:K) stopped
#                TC_WP_FAILURE_INJECTION_DELAY_S after the publisher starts; the
#                other receivers must complete (TC_WP_FAILURE_INJECTION_ENABLE=1)
# Then examples/cross_host/summarize_scaleout_suite.py writes suite.json and
# suite.md (publish-to-apply p50/p99, source concentration) in the run
# folder.  Needs root (ip netns).  Exit 0 when every case met its checks.
#
#   TCAST=build/bin/tcast TC_SCALE_RECEIVER_COUNTS=1,2,4,8 \
#       bash examples/cross_host/run_multihost_weight_publisher_suite.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
T=${TCAST:-$repo/build/bin/tcast}
T=$(cd "$(dirname "$T")" && pwd)/$(basename "$T")
. "$repo/scripts/netns-lib.sh"
PY=${TC_PYTHON:-/usr/bin/python3}
counts=${TC_SCALE_RECEIVER_COUNTS:-1,2,4,8}
nver=${TC_SCALE_NUM_VERSIONS:-3}
keep=${TC_WP_KEEP_LAST:-2}
bytes=${TC_WP_PAYLOAD_BYTES:-4194304}
interval=${TC_PUBLISH_INTERVAL_S:-1}
rx_timeout=${TC_RECEIVER_TIMEOUT_S:-60}
ret_timeout=${TC_RETENTION_TIMEOUT_S:-30}
hostmem=${TC_WP_HOST_MEMORY:-1GiB}
# extra daemon settings, KEY=VALUE separated by spaces (e.g. host_spare=0)
dsets=()
for kv in ${TC_WP_DAEMON_SET:-}; do dsets+=(--set "$kv"); done
rx_keep=${TC_WP_RECEIVER_KEEP:-}
progressive=${TC_WP_PROGRESSIVE_ENABLE:-0}
baseline=${TC_WP_BASELINE_ENABLE:-1}
finj=${TC_WP_FAILURE_INJECTION_ENABLE:-0}
ftarget=${TC_WP_FAILURE_INJECTION_TARGET:-receiver:0}
fdelay=${TC_WP_FAILURE_INJECTION_DELAY_S:-1}
out=${TC_WP_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/tcast-wp-suite-XXXXXX")}
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
	echo "SKIP: needs root and iproute2 for network namespaces (ip netns)"
	exit 77
fi
mkdir -p "$out" && chmod 700 "$out"
export PYTHONPATH=$repo/python${PYTHONPATH:+:$PYTHONPATH}
export TCAST_BIN=$T TCAST_LIB=${TCAST_LIB:-$(dirname "$T")/../lib/libtcast.so}
max=0
for n in ${counts//,/ }; do [ "$n" -gt "$max" ] && max=$n; done
id=$$
sub="10.$((150 + id % 50)).$(((id / 50) % 250))"
br="wpbr$((id % 100000))"
ns=()
for i in $(seq 0 "$max"); do ns+=("wp$i-$id"); done
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for s in "$out"/*/n*/d.sock; do [ -S "$s" ] && "$T" --socket "$s" daemon stop --timeout 5 >/dev/null 2>&1; done
	for g in "$out"/*/gs; do [ -d "$g" ] && "$T" global stop --state-dir "$g" >/dev/null 2>&1; done
	for n in "${ns[@]}"; do ip netns del "$n" 2>/dev/null; done
	ip link del "$br" 2>/dev/null
}
trap cleanup EXIT
mark() { echo "[$(date +%T)] $*"; }

ip link add "$br" type bridge && ip link set "$br" up || { echo "SKIP: cannot make a bridge"; exit 77; }
for i in $(seq 0 "$max"); do
	netns_join "${ns[$i]}" "$br" "$i-$id" "$sub.$((11 + i))"
done
(umask 077; head -c 48 /dev/urandom | base64 -w0 >"$out/secret")

# run_case NAME LANE RECEIVERS [FAIL_TARGET_INDEX]
run_case() {
	local name=$1 lane=$2 nrx=$3 fidx=${4:-}
	local c=$out/$name
	mkdir -p "$c" && chmod 700 "$c"
	mark "case $name: lane $lane, $nrx receivers"
	"$T" global start --state-dir "$c/gs" --cluster-secret-file "$out/secret" --listen "$sub.1:7470" \
		--lease-ms 3000 >/dev/null || { echo "case $name: global store did not start" >&2; return 1; }
	# the global store runs in the root namespace, reachable over the bridge
	for i in $(seq 0 "$nrx"); do
		mkdir -p "$c/n$i" && chmod 700 "$c/n$i"
		ip netns exec "${ns[$i]}" "$T" --socket "$c/n$i/d.sock" daemon start --host-memory "$hostmem" \
			--set "global=$sub.1:7470" --set "cluster_secret_file=$out/secret" --set "node_name=node-$i" \
			--set "peer_listen=$sub.$((11 + i)):7070" --set peer_timeout_ms=3000 "${dsets[@]}" >/dev/null ||
			{ echo "case $name: daemon $i did not start" >&2; cat "$c/n$i"/*.log >&2; return 1; }
	done
	local common=(--init-mode connect --model-name "wp-$name" --start-version 1 --num-versions "$nver"
		--keep-last "$keep" --payload-mode tp_ranked --tp-world-size 1 --payload-bytes "$bytes"
		--output-dir "$c" --poll-s 0.1)
	[ -n "$rx_keep" ] && common+=(--receiver-keep "$rx_keep")
	local peers=()
	[ "$lane" = baseline ] && peers=(--peers "$sub.11:7070")
	local rx=()
	for i in $(seq 1 "$nrx"); do
		ip netns exec "${ns[$i]}" env TCAST_SOCKET="$c/n$i/d.sock" "$PY" -m tcast.tools.weight_publisher_e2e \
			receiver "${common[@]}" --connect-address "$c/n$i/d.sock" --run-id "rx$i" \
			--receiver-timeout-s "$rx_timeout" --materialize-device cpu "${peers[@]}" >"$c/rx$i.out" 2>&1 &
		rx+=($!)
		pids+=($!)
	done
	ip netns exec "${ns[0]}" "$PY" -m tcast.tools.weight_publisher_e2e publisher "${common[@]}" \
		--connect-address "$c/n0/d.sock" --run-id pub --publish-interval-s "$interval" \
		--retention-timeout-s "$ret_timeout" >"$c/pub.out" 2>&1 &
	local pp=$!
	pids+=($pp)
	if [ -n "$fidx" ]; then
		sleep "$fdelay"
		mark "case $name: stopping the daemon of receiver $fidx"
		"$T" --socket "$c/n$fidx/d.sock" daemon stop --timeout 5 >/dev/null 2>&1
	fi
	local rcs=() prc
	for p in "${rx[@]}"; do wait "$p"; rcs+=($?); done
	wait "$pp"; prc=$?
	local rclist
	rclist=$(IFS=,; echo "${rcs[*]}")
	printf '{"name": "%s", "lane": "%s", "receivers": %d, "failed_receiver": %s, "publisher_rc": %d, "receiver_rcs": [%s]}\n' \
		"$name" "$lane" "$nrx" "${fidx:-null}" "$prc" "$rclist" >"$c/case.json"
	for i in $(seq 0 "$nrx"); do "$T" --socket "$c/n$i/d.sock" daemon stop --timeout 5 >/dev/null 2>&1; done
	"$T" global stop --state-dir "$c/gs" >/dev/null 2>&1
	mark "case $name: publisher rc $prc, receivers rc $rclist"
}

# the bridge carries the global store: give the root namespace an address on it
ip addr add "$sub.1/24" dev "$br"
for n in ${counts//,/ }; do
	[ "$baseline" = 1 ] && run_case "baseline-$n" baseline "$n"
	[ "$progressive" = 1 ] && run_case "progressive-$n" progressive "$n"
done
if [ "$finj" = 1 ]; then
	k=${ftarget#receiver:}
	run_case "failure-$max" failure "$max" "$((k + 1))"
fi
"$PY" "$here/summarize_scaleout_suite.py" --tp-dir "$out"
