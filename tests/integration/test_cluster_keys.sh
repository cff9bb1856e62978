#!/bin/bash
# Keys that move while a daemon holds an older version (issue 12 gaps),
# with real processes on loopback TCP:
#   1. `tcast pull KEY` into a daemon whose KEY names another (removed or
#      older) artifact moves the key to the pulled one: outside a cluster
#      by compare-and-swap of the local generation (a move meanwhile is
#      refused before any byte is pulled), in a cluster by the global
#      store's confirm, adopted at the cluster's generation.
#   2. A daemon hears of other nodes' moves (key_sync_ms): B's record of
#      a key A moved follows within a bounded time; attaching it by key
#      on B, which does not hold the new artifact, says to pull it; a
#      compare-and-swap on B at the new generation wins, and A follows.
#   3. An import whose key the global store moved before the node failed
#      to keep the artifact (failpoint import_insert_fail) takes the
#      cluster's key back to the version before; a new key stays, naming
#      what no node holds (a pull says so).  A budget too small fails
#      before the global store is asked: the cluster's key is untouched.
set -u
T=${TCAST:?}
. "$(dirname "$0")/../lib/cluster.sh"
DATA=${TC_TEST_DATA:?}
dir=$(mktemp -d /tmp/tcast-ckeys-XXXXXX)
chmod 700 "$dir"
cleanup() {
	for n in a b c e f t; do d $n daemon stop >/dev/null 2>&1; done
	g stop >/dev/null 2>&1
	[ "$fail" = 0 ] || tail -n 30 "$dir/gs/global.log" >&2
	rm -rf "$dir"
}
trap cleanup EXIT
keygen() { d "$1" --json keys "$2" | json 'd["generation"]'; }
keyid() { d "$1" --json keys "$2" | json 'd["id"]'; }

new_secret "$dir/secret"
start_daemon() { # name [--set ...]
	local n=$1; shift
	mkdir -p "$dir/$n" && chmod 700 "$dir/$n"
	d "$n" daemon start --host-memory "${MEM:-256MiB}" \
		--set "cluster_secret_file=$dir/secret" --set "node_name=node-$n" \
		--set "peer_listen=127.0.0.1:0" "$@" >/dev/null
}

# ---- 1a. Outside a cluster: C holds k -> X (removed), E has k -> Y.
ok start_daemon c
ok start_daemon e
E=$(cat "$dir/e/peer.addr")
x=$(d c import "$DATA/dtypes.safetensors" --key k 2>/dev/null)
y=$(d e import "$DATA/many-tensors.safetensors" --key k 2>/dev/null)
ok test -n "$x" -a -n "$y" -a "$x" != "$y"
ok d c rm "$x" >/dev/null
r=$(d c --json pull k --from "$E" 2>&1)
ok test $? = 0
ok is "$(echo "$r" | json 'd["id"]')" "$y"
ok is "$(keyid c k)" "$y"
ok is "$(keygen c k)" 2
# Older (not removed) artifact: k -> X again by CAS, then pull moves it.
x=$(d c import "$DATA/dtypes.safetensors" 2>/dev/null)
ok d c keys set k "$x" --expect 2 >/dev/null
ok d c rm "$y" >/dev/null
ok d c pull k --from "$E" >/dev/null 2>&1
ok is "$(keyid c k)" "$y"
ok is "$(keygen c k)" 4
# Pulling what the key names already changes nothing.
ok d c pull k --from "$E" >/dev/null 2>&1
ok is "$(keygen c k)" 4

# ---- 1b. In a cluster: B's k names an older artifact; A moved k.
out=$(g start --listen 127.0.0.1:0 --lease-ms 1500 --set handshake_ms=500)
ok test $? = 0
G=$(cat "$dir/gs/global.addr")
ok start_daemon a --set "global=$G"
ok start_daemon b --set "global=$G"
ok wait_for 10 live 2
x=$(d a import "$DATA/dtypes.safetensors" --key m 2>/dev/null)
ok d b pull m >/dev/null 2>&1
ok is "$(keyid b m)" "$x"
y=$(d a import "$DATA/many-tensors.safetensors" --key m --expect 1 2>/dev/null)
ok test -n "$y"
ok d b rm "$x" >/dev/null
r=$(d b --json pull m 2>&1)
ok test $? = 0
ok is "$(echo "$r" | json 'd["id"]')" "$y"
ok is "$(keyid b m)" "$y"
ok is "$(keygen b m)" "$(d b --json global resolve m --via-daemon | json 'd["gen"]')"
ok is "$(keygen b m)" 2
# A key that names another artifact cluster-wide is still a conflict.
z=$(d b import "$DATA/dtypes.safetensors" 2>/dev/null)
out=$(d b keys set m "$z" 2>&1)
ok test $? != 0
ok has "$out" "compare-and-swap"

# ---- 2. B hears of A's move of a key B holds.
x=$(d a import "$DATA/dtypes.safetensors" --key n 2>/dev/null)
ok d b pull n >/dev/null 2>&1
ok is "$(keygen b n)" 1
# B does not hold the version A moves the key to (1b pulled it).
ok d b rm "$(d a --json keys m | json 'd["id"]')" >/dev/null
y=$(d a import "$DATA/many-tensors.safetensors" --key n --expect 1 2>/dev/null)
ok test -n "$y"
at_gen() { test "$(keygen "$1" "$2")" = "$3"; }
ok wait_for 10 at_gen b n 2
ok is "$(keyid b n)" "$y"
ok is "$(d b --json keys n | json 'd["held"], d["moved_elsewhere"]')" "False True"
out=$(d b inspect n 2>&1)
ok test $? != 0
ok has "$out" "key 'n' moved to '$y' (generation 2) on another node"
ok has "$out" "pull it: tcast pull n"
# The old version stays held (unkeyed) and attachable by id.
ok d b inspect "$x" >/dev/null
# Pulling it fixes it; a CAS on B at the new generation wins cluster-wide.
ok d b pull n >/dev/null 2>&1
ok d b inspect n >/dev/null
ok d b keys set n "$x" --expect 2 >/dev/null
ok wait_for 10 at_gen a n 3
ok is "$(keyid a n)" "$x"
ok d a inspect n >/dev/null
ok is "$(d a --json keys n | json 'd["moved_elsewhere"]')" True

# ---- 3. A node that fails to keep what the cluster's key moved to.
TCAST_FAILPOINTS=import_insert_fail=- start_daemon f --set "global=$G" --set "log_file=$dir/f/tcastd.log"
ok test $? = 0
ok wait_for 10 live 3
x=$(d f import "$DATA/dtypes.safetensors" --key u 2>/dev/null)
ok test -n "$x"
out=$(d f import "$DATA/many-tensors.safetensors" --key u --expect 1 2>&1)
ok test $? != 0
cl_at() { # key gen id: the cluster's key, read through node A
	test "$(d a --json global resolve "$1" --via-daemon | json 'd["gen"], d["id"]')" = "$2 $3"
}
ok wait_for 10 cl_at u 3 "$x" # moved back, one generation on
# F's own key was never moved by the import; its key sync then takes the
# cluster's generation 3 (naming x, held here).
ok wait_for 10 at_gen f u 3
ok is "$(keyid f u)" "$x"
ok d f inspect u >/dev/null
ok wait_for 10 grep -q "could not keep .* moved it back (generation 3)" "$dir/f/tcastd.log"
# A new key has no version to go back to: it names what no node holds.
out=$(d f import "$DATA/tiny-llama/model-00005-of-00006.safetensors" --key w 2>&1)
ok test $? != 0
ok wait_for 10 grep -q "key 'w' has no version before 1" "$dir/f/tcastd.log"
out=$(d b pull w 2>&1)
ok test $? != 0
ok has "$out" "no peer holds it"
# A budget too small: refused before the global store is asked.
MEM=64KiB start_daemon t --set "global=$G"
ok test $? = 0
ok wait_for 10 live 4
out=$(d t import "$DATA/many-tensors.safetensors" --key u --expect 3 2>&1)
ok test $? != 0
ok cl_at u 3 "$x"

# ---- 4. KEYS_GET, and the fallback to KEY_GET for an older store.
counter() { g status --json | json "d['counters']['$1']"; }
k0=$(counter key_gets)
b0=$(counter keys_gets)
sleep 2.5 # two key sync rounds (key_sync_ms 1000) on every daemon
ok test "$(counter keys_gets)" -gt "$b0"
ok is "$(counter key_gets)" "$k0"
ok g stop
TCAST_FAILPOINTS=gs.old_store=KEYS_GET g start --listen "$G" --lease-ms 1500 \
	--set handshake_ms=500 >/dev/null
ok test $? = 0
ok wait_for 15 live 4
# Each daemon's first KEYS_GET there costs it its connection (it
# reconnects at once) and says so; then key sync goes key by key (T
# holds no key: it asks nothing).
for n in a b; do ok wait_for 10 grep -q "does not answer KEYS_GET" "$dir/$n/daemon.log"; done
ok wait_for 10 grep -q "does not answer KEYS_GET" "$dir/f/tcastd.log"
via_a() { d a --json global resolve n --via-daemon >/dev/null; }
ok wait_for 10 via_a # A is back on the store
ok is "$(keygen a n)" 3
y=$(d a import "$DATA/many-tensors.safetensors" --key n --expect 3 2>/dev/null)
ok test -n "$y"
ok wait_for 15 at_gen b n 4
ok is "$(keyid b n)" "$y"
ok is "$(counter keys_gets)" 0
ok test "$(counter key_gets)" -gt 0

echo "test_cluster_keys: $pass passed, $fail failed"
[ "$fail" = 0 ]
