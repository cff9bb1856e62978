#!/bin/bash
# The weight publisher across five network-namespace nodes (a publisher and
# four receivers, each with its daemon, one global store): the e2e harness
# publishes three versions with keep_last=2; every receiver pulls each
# version peer to peer from the sources the global store names, validates
# it and reports publish-to-apply latency; the publisher's retention check
# needs v1 realizable nowhere in the cluster and v2, v3 somewhere.  Then the
# failure lane: receiver 0's daemon stopped a second after the publisher
# starts, the three others must complete.  Needs root (ip netns).
set -u
T=${TCAST:?}
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
	echo "SKIP: needs root and iproute2 for network namespaces (ip netns)"
	exit 77
fi
if [ -n "${TC_SANITIZED:-}" ]; then
	echo "SKIP: the harness is Python, which cannot load the sanitized library"
	exit 77
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/tcast-wpns-XXXXXX")
trap 'rm -rf "$dir"' EXIT
pass=0 fail=0
ok() { if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL (line ${BASH_LINENO[0]}): $*" >&2; fi; }
q() { /usr/bin/python3 -c "import json; d=json.load(open('$dir/run/suite.json')); print($1)"; }

TCAST=$T TCAST_LIB=${TC_BUILD:-$(dirname "$T")/..}/lib/libtcast.so TC_WP_OUT=$dir/run \
	TC_SCALE_RECEIVER_COUNTS=4 TC_SCALE_NUM_VERSIONS=3 TC_WP_KEEP_LAST=2 TC_PUBLISH_INTERVAL_S=1.5 \
	TC_WP_BASELINE_ENABLE=0 TC_WP_PROGRESSIVE_ENABLE=1 TC_WP_FAILURE_INJECTION_ENABLE=1 \
	TC_WP_FAILURE_INJECTION_DELAY_S=1 TC_RECEIVER_TIMEOUT_S=40 TC_RETENTION_TIMEOUT_S=20 \
	bash "$root/examples/cross_host/run_multihost_weight_publisher_suite.sh" >"$dir/suite.out" 2>&1
rc=$?
cat "$dir/suite.out"
ok test "$rc" = 0
ok test "$(q 'len(d["cases"])')" = 2
ok test "$(q '[c["lane"] for c in d["cases"]]')" = "['progressive', 'failure']"
ok test "$(q 'all(c["ok"] for c in d["cases"])')" = True
ok test "$(q 'all(c["retention_ok"] for c in d["cases"])')" = True
ok test "$(q 'd["cases"][0]["receivers_ok"]')" = 4
ok test "$(q 'd["cases"][0]["publish_to_apply_s"]["n"]')" = 12
ok test "$(q 'd["cases"][1]["receivers_ok"]')" = 3
ok test "$(q 'd["cases"][1]["failed_receiver"]')" = 1
ok test "$(q 'd["cases"][0]["publish_to_apply_s"]["p99"] is not None')" = True
ok test -s "$dir/run/suite.md"
# every version each receiver got was validated and counted in bytes
ok test "$(q 'd["cases"][0]["bytes_pulled"]')" = "$((12 * 4194304))"
echo "test_wp_netns: $pass passed, $fail failed"
[ "$fail" = 0 ]
