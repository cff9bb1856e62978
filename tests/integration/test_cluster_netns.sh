#!/bin/bash
# The cluster as issue 12's test list names it: one global store and four
# daemons, each in its own network namespace on a bridge (real TCP between
# them, nothing on loopback).
#   1. put on A with a key; B, C and D realize it by key at once, with
#      their sources from the global store only (no --from);
#   2. the global store is killed -9 while those pulls run, and started
#      again while they still run: the pulls finish from the sources they
#      had, nothing the store acknowledged is lost, every daemon
#      re-registers by itself and reports the replica it now holds;
#   3. link delay: with tc netem where this kernel has it (the test says
#      which), else through the failpoint peer.delay_chunk (100 ms per
#      chunk per connection, on every node here, so that step 2's pulls
#      last long enough to be interrupted).
# Needs root (ip netns); skipped otherwise.
set -u
T=${TCAST:?}
. "$(dirname "$0")/../lib/cluster.sh"
netns_require
dir=$(mktemp -d "${TMPDIR:-/tmp}/tcast-cnet-XXXXXX")
chmod 700 "$dir"
cleanup() {
	daemons_stop
	gs stop >/dev/null 2>&1
	[ "$fail" = 0 ] || for n in a b c d; do echo "--- $n"; tail -n 12 "$dir/$n"/*.log 2>/dev/null; done >&2
	netns_cleanup
	rm -rf "$dir"
}
trap cleanup EXIT

netns_nodes cn 5 # ns[0]: the global store; ns[1..4]: A, B, C, D
G=$sub.11:7480
new_secret "$dir/secret"
# gs VERB ARGS...: `tcast global VERB` inside the store's namespace.
gs() {
	ip netns exec "${ns[0]}" "$T" global "$1" --state-dir "$dir/gs" \
		--cluster-secret-file "$dir/secret" "${@:2}"
}
# node NAME I ENV...: a daemon in ns[I] that joins the global store.
node() {
	local name=$1 i=$2
	shift 2
	mkdir -p -m 700 "$dir/$name"
	socks+=("$dir/$name/d.sock")
	env "$@" ip netns exec "${ns[$i]}" "$T" --socket "$dir/$name/d.sock" --json daemon start \
		--host-memory 1GiB --set host_spare=0 --set global="$G" --set node_name="$name" \
		--set cluster_secret_file="$dir/secret" --set peer_listen="$sub.$((11 + i)):7070" \
		--set peer_timeout_ms=3000 --set zone=z1 --set rack="r$i" \
		>"$dir/$name/start.json" || { echo "cannot start daemon $name" >&2; return 1; }
}
gjson() { gs status --json | json "$1"; }
live_nodes() { test "$(gjson 'd["nodes_live"]')" = "$1"; }

mark setup
gs start --listen "$G" --lease-ms 2000 >/dev/null || { echo "cannot start the global store" >&2; exit 1; }
for i in 1 2 3 4; do
	node "$(echo abcd | cut -c$i)" "$i" TCAST_FAILPOINTS=peer.delay_chunk= || exit 1
done
ok wait_for 10 live_nodes 4
# 256 MiB: 64 chunks of 4 MiB, ~100 ms each per connection (the failpoint).
mk "$dir/m.safetensors" $((256 << 20))
want=$(t a import "$dir/m.safetensors" --key model:net 2>/dev/null)
ok has "$want" "tc2:"
resolves() { ip netns exec "${ns[$1]}" "$T" --socket "$dir/$2/d.sock" global resolve model:net --via-daemon; }
ok wait_for 10 resolves 4 d

# 1 + 2. B, C and D pull by key at once; the store dies and comes back
# meanwhile.
mark "1+2. B, C, D realize model:net by key; the global store is killed -9 and restarted mid-pull"
t0=$(date +%s.%N)
for i in 2 3 4; do
	n=$(echo abcd | cut -c$i)
	ip netns exec "${ns[$i]}" "$T" --socket "$dir/$n/d.sock" --json pull model:net --streams 1 \
		>"$dir/$n.json" 2>"$dir/$n.err" &
	eval "pp_$n=$!"
done
sleep 0.8
gpid=$(cat "$dir/gs/global.pid")
kill -9 "$gpid"
down_at=$(date +%s.%N)
sleep 0.5
# Still running: the store went down under load, not after it.
running=0
for n in b c d; do p=pp_$n; kill -0 "${!p}" 2>/dev/null && running=$((running + 1)); done
ok test "$running" -ge 1
gs start --listen "$G" --lease-ms 2000 >/dev/null
ok test $? = 0
for n in b c d; do
	p=pp_$n
	wait "${!p}"
	rc=$?
	ok is "$rc" 0
	[ "$rc" = 0 ] || cat "$dir/$n.err" >&2
	ok is "$($PY -c "import json; print(json.load(open('$dir/$n.json'))['id'])")" "$want"
done
done_at=$(date +%s.%N)
echo "  pulls ran $($PY -c "print(round($done_at - $t0, 2))") s; the store was killed at +$($PY -c "print(round($down_at - $t0, 2))") s"
# The bytes are A's, on every node.
t a export "$want" "$dir/a.st"
for n in b c d; do
	t "$n" export "$want" "$dir/$n.st"
	ok cmp -s "$dir/a.st" "$dir/$n.st"
done
# The restarted store lost nothing it acknowledged (the key, its
# artifact), and every daemon re-registered and reported its replica.
ok wait_for 15 live_nodes 4
ok test "$(gjson 'd["keys"]')" -ge 1
has_replica() { test "$(gjson "[n['replicas'].get('host', 0) for n in d['nodes'] if n['name']=='$1'][0]")" -ge 1; }
for n in a b c d; do ok wait_for 15 has_replica "$n"; done
ok has "$(resolves 3 c)" "$want"

# 3. link delay through tc netem, where the kernel has it.
mark "3. link delay (tc netem where present)"
dev="vcn4-$id" # D's end of its veth, in ns[4] (netns_nodes: v<tag><i>-<id>)
if ip netns exec "${ns[4]}" tc qdisc add dev "$dev" root netem delay 20ms 2>"$dir/netem.err"; then
	echo "  netem: 20 ms added on D's link"
	t d rm "$want" >/dev/null
	run pull_on d "${ns[4]}" "$want"
	ok is "$rc" 0
	ok is "$(jq_ 'd["id"]')" "$want"
	ip netns exec "${ns[4]}" tc qdisc del dev "$dev" root
else
	echo "  SKIP (netem lane): this kernel has no netem qdisc ($(head -c 120 "$dir/netem.err" | tr '\n' ' ')); the delay in step 2 came from the failpoint peer.delay_chunk"
fi

summary test_cluster_netns
