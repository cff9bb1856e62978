#!/bin/bash
# Policy ha (docs/durable.md, "ha: a replica on another node"): a global
# store and daemons on loopback TCP.  A puts and imports with policy ha;
# the reply's `degraded` and inspect's `durable.degraded` / `durable.ha`
# say what became of the replica on another node:
#   A alone in the cluster: "no other live node in the cluster";
#   B joins: B holds a replica (tcast ls on B, the global store's sources),
#     the reply is not degraded, a failed artifact put again is retried;
#   from Python, tc.put(policy="ha"): last_import.degraded is empty;
#   B leaves, C's peer server drops the request (failpoint
#     peer.drop_replicate): degraded names node-c and why;
#   C's pull fails (its host memory is too small): "node node-c: pull
#     failed: ...";
#   C is slow (peer.delay_replicate, 3 s) and A's ha_wait_ms is 1 s: the
#     reply says pending, inspect later says done on node-c;
#   A restarts with ha_check_ms=1000: its check finds the replica C holds
#     and names the one whose holder left as failed; a put again makes one;
#   C loses a replica (rm): A's check makes another.
set -u
T=${TCAST:?}
. "$(dirname "$0")/../lib/cluster.sh"
BUILD=${TC_BUILD:-$(dirname "$T")/..}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d /tmp/tcast-ha-XXXXXX)
chmod 700 "$dir"
cleanup() {
	for n in a b c; do d $n daemon stop >/dev/null 2>&1; done
	g stop >/dev/null 2>&1
	if [ "$fail" != 0 ]; then
		for n in a b c; do
			echo "--- $n" >&2
			tail -n 15 "$dir/$n/tcastd.log" "$dir/$n"/*.log 2>/dev/null >&2
		done
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

new_secret "$dir/secret"
g start --listen 127.0.0.1:0 --lease-ms 1500 >/dev/null
ok test $? = 0
G=$(cat "$dir/gs/global.addr")

# daemon NAME PEERPORT [--set K=V | ENV=V ...]
daemon() {
	local n=$1 port=$2 envs=() sets=()
	shift 2
	for a in "$@"; do
		case $a in *=*) if [[ $a == TCAST_* ]]; then envs+=("$a"); else sets+=(--set "$a"); fi ;; esac
	done
	mkdir -p "$dir/$n" && chmod 700 "$dir/$n"
	env "${envs[@]}" "$T" --socket "$dir/$n/d.sock" daemon start --host-memory 256MiB \
		--set "global=$G" --set "cluster_secret_file=$dir/secret" \
		--set "node_name=node-$n" --set "peer_listen=127.0.0.1:$port" \
		--set "log_file=$dir/$n/tcastd.log" "${sets[@]}" >/dev/null
}
# leave NODE: it stops and the cluster is down to A; c_joins [SETTINGS]: C
# starts with them and the cluster is A and C.
leave() { d "$1" daemon stop >/dev/null; ok wait_for 10 live 1; }
c_joins() { daemon c 0 "$@"; ok test $? = 0; ok wait_for 10 live 2; }
# imp NODE FILE: import with policy ha, JSON reply in $r.
imp() { r=$(d "$1" --json import "$2" --policy ha 2>"$dir/err"); echo "import $2: degraded: $(deg)"; }
deg() { echo "$r" | json 'd["degraded"]'; }
inspect_ha() { d a --json inspect "$1" | json "d['durable']$2"; }
on_b() { d "$1" --json ls | json "'$2' in [a['id'] for a in d['artifacts']]" | grep -q True; }

mkdir -p "$dir/shared"
daemon a 0 "shared_disk=$dir/shared" "ha_wait_ms=1000"
ok test $? = 0
ok wait_for 10 live 1

# 1. Alone: durable, and degraded saying why.
mk "$dir/f1.safetensors" 5000000
imp a "$dir/f1.safetensors"
ok is "$(echo "$r" | json 'd["persistence"]')" durable
ok is "$(deg)" "ha: no replica on another node: no other live node in the cluster"
id1=$(echo "$r" | json 'd["id"]')
ok is "$(inspect_ha "$id1" '["ha"]["state"]')" failed
ok is "$(inspect_ha "$id1" '["degraded"][0]')" "ha: no replica on another node: no other live node in the cluster"

# 2. B joins: the replica is made on B before the reply.
daemon b 0
ok test $? = 0
ok wait_for 10 live 2
mk "$dir/f2.safetensors" 9000000
imp a "$dir/f2.safetensors"
ok is "$(deg)" ""
id2=$(echo "$r" | json 'd["id"]')
ok on_b b "$id2"
ok is "$(inspect_ha "$id2" '["ha"]["state"]')" done
ok is "$(inspect_ha "$id2" '["ha"]["node"]')" node-b
ok is "$(inspect_ha "$id2" '["degraded"]')" "[]"
# The global store names B as a holder (its host replica).
b_holds() { d a --json global resolve "$1" --via-daemon | json "'node-b' in [s['node'] for s in d['sources']]" | grep -q True; }
ok wait_for 5 b_holds "$id2"
# B's copy has A's bytes (same id: B's daemon hashed what it pulled).
ok is "$(d b --json inspect "$id2" | json 'd["id"]')" "$id2"
# The artifact that failed alone is retried when put again.
imp a "$dir/f1.safetensors"
ok is "$(deg)" ""
ok on_b b "$id1"
ok is "$(inspect_ha "$id1" '["ha"]["state"]')" done

# 3. Python: tc.put(policy="ha") in a cluster is not degraded.  (Python
# cannot load a sanitized libtcast through ctypes: the ASan suite skips
# this step, as run-tests.sh skips pytest there; tests/python/test_ha.py
# covers it in the normal build.)
if [ -z "${TC_SANITIZED:-}" ]; then
	out=$(TCAST_SOCKET="$dir/a/d.sock" TCAST_LIB="$BUILD/lib/libtcast.so" PYTHONPATH="$ROOT/python" \
		$PY -c '
import numpy as np, tcast as tc
a = tc.put({"w": np.arange(300000, dtype=np.float32)}, policy="ha")
print(a.last_import.persistence, repr(a.last_import.degraded), a.artifact_id)
' 2>&1)
	ok has "$out" "durable () "
	pyid=${out##* }
	ok on_b b "$pyid"
fi

# 4. B leaves; C's peer server drops the request.
leave b
c_joins TCAST_FAILPOINTS=peer.drop_replicate=
mk "$dir/f3.safetensors" 3000000
imp a "$dir/f3.safetensors"
ok has "$(deg)" "ha: no replica on another node: node node-c: no answer from its peer server"
ok has "$(deg)" "connection closed"
id3=$(echo "$r" | json 'd["id"]')
ok is "$(inspect_ha "$id3" '["ha"]["state"]')" failed
ok has "$(inspect_ha "$id3" '["ha"]["error"]')" "node node-c: no answer"
ok test "$(echo "$r" | json 'd["persistence"]')" = durable

# 5. C's own pull fails: its host memory cannot hold the artifact.
leave c
c_joins host_memory=4MiB
mk "$dir/f5.safetensors" 6000000
imp a "$dir/f5.safetensors"
ok has "$(deg)" "ha: no replica on another node: node node-c: pull failed: "
id5=$(echo "$r" | json 'd["id"]')
ok has "$(grep -h "replica of $id5" "$dir/c/tcastd.log")" "failed"

# 6. A slow node: the reply waits ha_wait_ms (1 s), says pending; inspect
# tells the truth once C is done.
leave c
c_joins TCAST_FAILPOINTS=peer.delay_replicate=
mk "$dir/f4.safetensors" 2000000
imp a "$dir/f4.safetensors"
ok has "$(deg)" "ha: replica on another node pending"
id4=$(echo "$r" | json 'd["id"]')
ok is "$(inspect_ha "$id4" '["ha"]["state"]')" pending
done4() { test "$(inspect_ha "$id4" '["ha"]["state"]')" = done; }
ok wait_for 10 done4
ok is "$(inspect_ha "$id4" '["ha"]["node"]')" node-c
ok is "$(inspect_ha "$id4" '["degraded"]')" "[]"
ok on_b c "$id4"

# 7. A restarts (checking every second from now): it knows nothing of its
# replicas until its first check asks the global store.  id4, which C
# holds, is found there; id2 (its holder B is gone) is failed, saying a
# replica is made once its bytes are in memory again; putting it again
# makes one (C, still slow).
d a daemon stop >/dev/null
daemon a 0 "shared_disk=$dir/shared" "ha_wait_ms=1000" "ha_check_ms=1000"
ok test $? = 0
ok wait_for 10 live 2
ok wait_for 10 done4
ok is "$(inspect_ha "$id4" '["ha"]["node"]')" node-c
failed2() { test "$(inspect_ha "$id2" '["ha"]["state"]')" = failed; }
ok wait_for 10 failed2
ok has "$(inspect_ha "$id2" '["ha"]["error"]')" "the global store names no other node holding it"
ok has "$(inspect_ha "$id2" '["degraded"][0]')" "made again once its bytes are in this node's memory"
ok grep -q "$id4: ha replica found on node node-c" "$dir/a/tcastd.log"
imp a "$dir/f2.safetensors"
done2() { test "$(inspect_ha "$id2" '["ha"]["state"]')" = done; }
ok wait_for 10 done2
ok is "$(inspect_ha "$id2" '["ha"]["node"]')" node-c

# 8. The replica is lost (C evicts it; here: rm): A's check notices and
# makes another while A holds the bytes.
ok on_b c "$id2"
d c rm "$id2" >/dev/null
gone2() { ! on_b c "$id2"; }
ok gone2
ok wait_for 30 on_b c "$id2"
ok wait_for 10 done2
ok grep -q "$id2: ha: the replica on node node-c is gone" "$dir/a/tcastd.log"

echo "test_ha: $pass passed, $fail failed"
[ "$fail" = 0 ]
