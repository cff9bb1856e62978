#!/bin/bash
# Publish-to-apply latency of the weight publisher, one publisher to N
# receivers (network namespaces, one daemon each, one global store):
# examples/cross_host/run_multihost_weight_publisher_suite.sh in two lanes
# on the same machine in the same run --
#   baseline     every receiver pulls from the publisher only (what a
#                hand-rolled "everyone fetches from the trainer" does)
#   progressive  receivers pull from every node the global store names,
#                so finished receivers serve the rest
# and prints p50/p99 of each and their ratio.  Needs root.
#   sudo bench/bench_weight_publisher.sh [RECEIVERS=8] [BYTES=1GiB] [VERSIONS=5]
set -u
here=$(cd "$(dirname "$0")" && pwd)
n=${1:-8}
bytes=${2:-1073741824}
nver=${3:-5}
out=${TC_WP_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/tcast-wp-bench-XXXXXX")}
# receivers let go of each version once applied (TC_WP_RECEIVER_KEEP=0), and
# no daemon keeps a spare segment (host_spare=0: 512 MiB each at a 4 GiB
# budget), so nine daemons of a 1 GiB model fit one 23 GiB machine (with
# spares the kernel killed the publisher's daemon at the third version)
TC_WP_OUT=$out TC_SCALE_RECEIVER_COUNTS=$n TC_SCALE_NUM_VERSIONS=$nver TC_WP_PAYLOAD_BYTES=$bytes \
	TC_WP_KEEP_LAST=${TC_WP_KEEP_LAST:-2} TC_WP_RECEIVER_KEEP=${TC_WP_RECEIVER_KEEP:-0} \
	TC_WP_HOST_MEMORY=${TC_WP_HOST_MEMORY:-4GiB} TC_WP_DAEMON_SET=${TC_WP_DAEMON_SET:-host_spare=0} TC_PUBLISH_INTERVAL_S=${TC_PUBLISH_INTERVAL_S:-15} \
	TC_RECEIVER_TIMEOUT_S=${TC_RECEIVER_TIMEOUT_S:-300} TC_RETENTION_TIMEOUT_S=60 \
	TC_WP_BASELINE_ENABLE=1 TC_WP_PROGRESSIVE_ENABLE=1 \
	bash "$here/../examples/cross_host/run_multihost_weight_publisher_suite.sh"
rc=$?
/usr/bin/python3 - "$out/suite.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c = {x["lane"]: x["publish_to_apply_s"] for x in d["cases"]}
if "baseline" in c and "progressive" in c and c["progressive"]["p50"]:
    b, p = c["baseline"], c["progressive"]
    print(f"publish-to-apply p50: baseline {b['p50']:.2f} s, progressive {p['p50']:.2f} s, "
          f"ratio {b['p50'] / p['p50']:.2f}x; p99: {b['p99']:.2f} s vs {p['p99']:.2f} s, "
          f"ratio {b['p99'] / p['p99']:.2f}x")
PY
exit $rc
