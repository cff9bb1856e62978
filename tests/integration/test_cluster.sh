#!/bin/bash
# The cluster's control side end to end, with real processes on loopback
# TCP: one global store and three daemons (zone/rack/host labels).  A key
# put on A resolves on B and C, ranked by topology; a compare-and-swap on
# A moves it cluster-wide; kill -9 of the global store loses nothing it
# acknowledged (SQLite WAL) and the daemons re-register by themselves
# while they keep serving; a node whose lease lapses (SIGSTOP) leaves
# routing and comes back; a wrong secret, garbage bytes and a silent
# client are refused; a secret file others can read is refused at start.
# (Loopback, not network namespaces: the control plane's behaviour does
# not depend on them; the peer data path's tests use them.)
set -u
T=${TCAST:?}
. "$(dirname "$0")/../lib/cluster.sh"
DATA=${TC_TEST_DATA:?}
dir=$(mktemp -d /tmp/tcast-cluster-XXXXXX)
chmod 700 "$dir"
cleanup() {
	for n in a b c x; do d $n daemon stop >/dev/null 2>&1; done
	g stop >/dev/null 2>&1
	[ "$fail" = 0 ] || tail -n 30 "$dir/gs/global.log" >&2
	rm -rf "$dir"
}
trap cleanup EXIT

new_secret "$dir/secret"
new_secret "$dir/wrong"

# A secret file others may read is refused, saying why.
chmod 644 "$dir/secret"
out=$(g run --listen 127.0.0.1:0 2>&1)
ok test $? != 0
echo "$out" | grep -q "has mode 0644: others may read it; it must be 0600"
ok test $? = 0
chmod 600 "$dir/secret"

out=$(g start --listen 127.0.0.1:0 --lease-ms 1500 --set handshake_ms=500)
ok test $? = 0
G=$(cat "$dir/gs/global.addr")
ok test -n "$G"

start_daemon() { # name zone rack host
	mkdir -p "$dir/$1" && chmod 700 "$dir/$1"
	d "$1" daemon start --host-memory 256MiB --set "global=$G" \
		--set "cluster_secret_file=$dir/secret" --set "node_name=node-$1" \
		--set "zone=$2" --set "rack=$3" --set "host=$4" \
		--set "peer_listen=127.0.0.1:$5" >/dev/null
}
# A daemon refuses a readable secret too.
cp "$dir/secret" "$dir/open" && chmod 644 "$dir/open"
mkdir -p "$dir/x" && chmod 700 "$dir/x"
out=$(d x daemon start --set "global=$G" --set "cluster_secret_file=$dir/open" 2>&1)
ok test $? != 0
echo "$out" | grep -q "must be 0600"
ok test $? = 0

start_daemon a z1 r1 h1 0
ok test $? = 0
start_daemon b z1 r1 h2 0
ok test $? = 0
start_daemon c z2 r9 h3 0 # the port the peer server picks is advertised
ok test $? = 0
ok wait_for 10 live 3

# Put on A; B and C resolve the key through their own daemons.
id=$(d a import "$DATA/dtypes.safetensors" --key model:v1 2>/dev/null)
ok test -n "$id"
has_src() { # daemon key node
	d "$1" --json global resolve "$2" --via-daemon | json "'$3' in [s['node'] for s in d['sources']]" | grep -q True
}
ok wait_for 10 has_src b model:v1 node-a
r=$(d b --json global resolve model:v1 --via-daemon)
ok test "$(echo "$r" | json 'd["id"]')" = "$id"
ok test "$(echo "$r" | json 'd["gen"]')" = 1
ok test "$(echo "$r" | json 'd["sources"][0]["distance"]')" = 2 # same rack
r=$(d c --json global resolve model:v1 --via-daemon)
ok test "$(echo "$r" | json 'd["sources"][0]["distance"]')" = 4 # other zone
ok test "$(echo "$r" | json 'd["sources"][0]["peer_addr"]')" = "$(cat "$dir/a/peer.addr")"
# C gets its own copy: it now ranks itself first.
d c import "$DATA/dtypes.safetensors" >/dev/null 2>&1
first_is_c() { test "$(d c --json global resolve model:v1 --via-daemon | json 'd["sources"][0]["node"]')" = node-c; }
ok wait_for 10 first_is_c
ok test "$(d c --json global resolve model:v1 --via-daemon | json 'd["sources"][0]["distance"]')" = 0
# B pulls it with no --from: the global store names A and C as sources.
r=$(d b --json pull model:v1 2>/dev/null)
ok test "$(echo "$r" | json 'd["id"]')" = "$id"
ok test "$(echo "$r" | json 'len(d["sources"])')" = 2
ok test "$(d b --json global resolve model:v1 --via-daemon | json 'd["sources"][0]["node"]')" = node-b
c_addr=$(cat "$dir/c/peer.addr")
ok test "${c_addr##*:}" -gt 0
ok test "$(d c --json global resolve model:v1 --via-daemon | json 'd["sources"][0]["peer_addr"]')" = "$c_addr"

# Compare-and-swap on A moves the key cluster-wide.
id2=$(d a import "$DATA/many-tensors.safetensors" --key model:v1 --expect 1 2>/dev/null)
ok test -n "$id2"
moved() { test "$(d b --json global resolve model:v1 --via-daemon | json 'd["id"]')" = "$id2"; }
ok wait_for 10 moved
ok test "$(d b --json global resolve model:v1 --via-daemon | json 'd["gen"]')" = 2

# Keys are decided by the global store before a daemon acknowledges:
# compare-and-swaps of one key from two nodes at once, exactly one wins
# cluster-wide each round, and the loser's error names the generations.
ida=$id2 idb=$id # each node holds its own
wins=0 losses=0
for i in 1 2 3 4 5; do
	(d a keys set race:$i "$ida" --expect 0 >"$dir/ra" 2>&1; echo $? >>"$dir/ra") &
	(d b keys set race:$i "$idb" --expect 0 >"$dir/rb" 2>&1; echo $? >>"$dir/rb") &
	wait
	for f in ra rb; do
		if [ "$(tail -n 1 "$dir/$f")" = 0 ]; then wins=$((wins + 1)); else
			losses=$((losses + 1))
			grep -q "TC_ECONFLICT" "$dir/$f" || { echo "loser said: $(cat "$dir/$f")"; fail=$((fail + 1)); }
			grep -q "key 'race:$i' is at generation 1, not 0" "$dir/$f" || fail=$((fail + 1))
		fi
	done
	ok test "$(d c --json global resolve race:$i --via-daemon | json 'd["gen"]')" = 1
done
ok test "$wins" = 5
ok test "$losses" = 5
# Group realization's node-scope records are each node's own: the same
# name on two nodes is no race.
ok d a keys set tcast.group/same/v1/decision "$ida" --expect 0 >/dev/null
ok d b keys set tcast.group/same/v1/decision "$idb" --expect 0 >/dev/null
out=$(d c global resolve tcast.group/same/v1/decision --via-daemon 2>&1)
ok test $? != 0
# A compare-and-swap on B of a key B never had: the generation is the
# cluster's (model:v1 is at 2 after A's move), and B's record takes it.
idc=$(d b import "$DATA/dtypes.safetensors" 2>/dev/null)
out=$(d b keys set model:v1 "$idc" --expect 1 2>&1)
ok test $? != 0
echo "$out" | grep -q "key 'model:v1' is at generation 2, not 1"
ok test $? = 0
r=$(d b --json keys set model:v1 "$idc" --expect 2)
ok test "$(echo "$r" | json 'd["generation"]')" = 3
ok test "$(d b --json keys model:v1 | json 'd["generation"]')" = 3
ok test "$(d c --json global resolve model:v1 --via-daemon | json 'd["gen"]')" = 3
ok test "$(d c --json global resolve model:v1 --via-daemon | json 'd["id"]')" = "$idc"
# A's next compare-and-swap from its stale generation 2 loses.
out=$(d a import "$DATA/dtypes.safetensors" --key model:v1 --expect 2 2>&1)
ok test $? != 0
echo "$out" | grep -q "is at generation 3, not 2"
ok test $? = 0
ok test "$(d a --json daemon status | json 'd["cluster"]["key_cas_lost"]')" -ge 1
id2=$idc # what model:v1 names now
# A hears of B's move by itself (key_sync_ms, docs/cluster.md).
a_at3() { test "$(d a --json keys model:v1 | json 'd["generation"], d["id"]')" = "3 $idc"; }
ok wait_for 10 a_at3

# Wrong secret, garbage and a silent client: refused, reason logged, and
# the store keeps serving.
out=$("$T" global status --global "$G" --cluster-secret-file "$dir/wrong" 2>&1)
ok test $? != 0
echo "$out" | grep -q "refused us"
ok test $? = 0
ok wait_for 5 grep -q "uses another cluster secret" "$dir/gs/global.log"
port=${G##*:}
sleep 1.1 # refusals are logged at most once a second (rate limit)
exec 5<>/dev/tcp/127.0.0.1/$port && printf 'GET / HTTP/1.1\r\n\r\n' >&5
ok wait_for 5 grep -q "not a tcast cluster handshake" "$dir/gs/global.log"
exec 5>&-
sleep 1.1
exec 6<>/dev/tcp/127.0.0.1/$port # says nothing
ok wait_for 5 grep -q "not finished within its deadline" "$dir/gs/global.log"
exec 6>&-
ok wait_for 5 live 3

# kill -9 of the global store: the daemons keep serving; nothing it
# acknowledged is lost; they re-register on their own.
gpid=$(cat "$dir/gs/global.pid")
kill -9 "$gpid"
ok d a ls >/dev/null
out=$(d b global resolve model:v1 --via-daemon 2>&1)
ok test $? != 0
# While it is down a compare-and-swap cannot be checked cluster-wide: a
# clear error, nothing changed; a plain set of a new key is taken here
# and published when the store is back.
down() { test "$(d a --json daemon status | json 'd["cluster"]["connected"]')" = False; }
ok wait_for 10 down
out=$(d a keys set model:v1 "$ida" --expect 3 2>&1)
ok test $? != 0
echo "$out" | grep -q "global store at $G is unreachable"
ok test $? = 0
echo "$out" | grep -q "TC_ENODAEMON"
ok test $? = 0
ok test "$(d a --json keys model:v1 | json 'd["generation"]')" = 3 # unchanged
out=$(d a import "$DATA/dtypes.safetensors" --key model:v1 --expect 3 2>&1)
ok test $? != 0
echo "$out" | grep -q "unreachable"
ok test $? = 0
ok d a keys set offline:1 "$ida" >/dev/null
g start --listen "$G" --lease-ms 1500 >/dev/null
ok test $? = 0
# Nothing it acknowledged is lost (6 keys); the queued offline:1 may
# already be in too, since a's daemon rejoins on its own within a second.
ok test "$(g status --json | json 'd["keys"]')" -ge 6
ok wait_for 15 live 3
ok wait_for 10 moved
published() { test "$(d b --json global resolve offline:1 --via-daemon | json 'd["id"]')" = "$ida"; }
ok wait_for 10 published
ok test "$(g status --json | json 'd["keys"]')" = 7
ok test "$(g status --json | json '[n["replicas"].get("host",0) for n in d["nodes"] if n["name"]=="node-a"][0]')" = 2
ok test "$(g status --json | json 'd["counters"]["registers"]')" -ge 3

# Lease expiry: a stopped daemon leaves routing, and returns.
apid=$(d a --json daemon status | json 'd["pid"]')
kill -STOP "$apid"
gone() { ! has_src b model:v1 node-a; }
ok wait_for 6 gone
ok test "$(g status --json | json '[n["live"] for n in d["nodes"] if n["name"]=="node-a"][0]')" = False
kill -CONT "$apid"
ok wait_for 10 has_src b model:v1 node-a

# A daemon that stops leaves routing at once (DEREGISTER).
d a daemon stop >/dev/null
ok test "$(g status --json | json '[n["live"] for n in d["nodes"] if n["name"]=="node-a"][0]')" = False
ok test "$(g status --json | json '[sum(n["replicas"].values()) for n in d["nodes"] if n["name"]=="node-a"][0]')" = 0

# A daemon's own generations survive its joining: keys it moved while
# alone (kept on its shared disk) are published at the generation it
# gave them (KEY_SET flag AT), so both sides number versions alike.
mkdir -p "$dir/x/shared" && chmod 700 "$dir/x"
dx() { d x "$@"; }
ok dx daemon start --host-memory 64MiB --set "shared_disk=$dir/x/shared" >/dev/null
ok dx import "$DATA/dtypes.safetensors" --key solo:k --policy durable >/dev/null
ok dx import "$DATA/many-tensors.safetensors" --key solo:k --policy durable --expect 1 >/dev/null
ok test "$(dx --json keys solo:k | json 'd["generation"]')" = 2
dx daemon stop >/dev/null
ok dx daemon start --host-memory 64MiB --set "shared_disk=$dir/x/shared" --set "global=$G" \
	--set "cluster_secret_file=$dir/secret" --set node_name=node-x >/dev/null
solo() { test "$(dx --json global resolve solo:k --via-daemon | json 'd["gen"]')" = 2; }
ok wait_for 10 solo
# and its next compare-and-swap goes on from there, cluster-wide
ok dx import "$DATA/dtypes.safetensors" --key solo:k --expect 2 >/dev/null
ok test "$(dx --json keys solo:k | json 'd["generation"]')" = 3
ok test "$(dx --json global resolve solo:k --via-daemon | json 'd["gen"]')" = 3
dx daemon stop >/dev/null

echo "test_cluster: $pass passed, $fail failed"
[ "$fail" = 0 ]
