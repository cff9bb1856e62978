#!/bin/bash
# The peer data path (issue 12, item 3) between real daemons in network
# namespaces (one veth each on a private bridge), through `tcast pull`:
#   put on A, pull on B: same id, same bytes; striping over two sources;
#   a corrupt chunk (failpoint peer.corrupt_chunk) caught and fetched
#   elsewhere, never registered, also while the verifiers are held (the
#   streams receive on, up to the buffer cap: failpoint pull.hold_verify); kill -9 of a source mid-pull, the pull
#   finishes from the other; a stalled source (quiet mid-pull, or SIGSTOP)
#   timed out; a source trickling its bytes dropped; a wrong secret and a garbage client refused (net/auth.h); a
#   flood of connections that never finish the handshake keeps no real
#   peer out; a
#   secret file of mode 0644 refused at start; 2 % packet loss (iptables
#   statistic match) on a receiver's link.  Needs root (ip netns); skipped
#   otherwise.
set -u
T=${TCAST:?}
. "$(dirname "$0")/../lib/cluster.sh"
netns_require
dir=$(mktemp -d "${TMPDIR:-/tmp}/tcast-peer-XXXXXX")
cleanup() {
	daemons_stop
	netns_cleanup
	rm -rf "$dir"
}
trap cleanup EXIT

netns_nodes p 3
A=$sub.11 B=$sub.12
new_secret "$dir/secret"
new_secret "$dir/wrong"

# A 64 MiB artifact (16 chunks) and a tiny tensor after it.
$PY - "$dir/m.safetensors" <<'PYEOF'
import json, os, struct, sys
n = 64 << 20
h = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]},
                "b": {"dtype": "F32", "shape": [3], "data_offsets": [n, n + 12]}}).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + os.urandom(n) + struct.pack("<3f", 1, 2, 3))
PYEOF

mark setup done
daemon a "${ns[0]}" "$A:7070" || exit 1
daemon b "${ns[1]}" "$B:7070" || exit 1
daemon c "${ns[2]}" "$sub.13:0" || exit 1
ok test -s "$dir/c/peer.addr"
ok has "$(cat "$dir/c/peer.addr")" "$sub.13:"
want=$(t a import "$dir/m.safetensors" --key model:peer 2>/dev/null)
ok has "$want" "tc2:"

# 1. put on A, pull on B by key: same id, same bytes, the key registered
mark "1. put on A, pull on B by key: same id, same bytes, the key registered"
run pull_on b "${ns[1]}" model:peer --from "$A:7070"
ok is "$rc" 0
ok is "$(jq_ 'd["id"]')" "$want"
ok is "$(jq_ 'd["sources"][0]["bytes"]')" "$((64 * 1048576 + 12))"
# no --streams: a lone source gets one stream per 2 CPUs, 4 to 8
# (tc__peer_auto_streams)
ncpu=$(nproc)
lone=$((ncpu / 2 < 4 ? 4 : ncpu / 2 > 8 ? 8 : ncpu / 2))
ok is "$(jq_ 'd["sources"][0]["streams"]')" "$lone"
ok is "$(t b keys --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["keys"][0]["id"])')" "$want"
t a export "$want" "$dir/a.st" && t b export model:peer "$dir/b.st"
ok cmp -s "$dir/a.st" "$dir/b.st"
# Again with the streams writing through the put's mapping, all at once
# (TCAST_PUT_WRITE=map; hosts where page tables are cheap take it).
t b rm model:peer >/dev/null 2>&1; t b rm "$want" >/dev/null 2>&1
# TCAST_PEER_LONE_STREAMS overrides the lone source's count.
TCAST_PUT_WRITE=map TCAST_PEER_LONE_STREAMS=6 run pull_on b "${ns[1]}" "$want" --from "$A:7070" --no-key
ok is "$rc" 0
ok is "$(jq_ 'd["sources"][0]["streams"]')" 6
t b export "$want" "$dir/b2.st"
ok cmp -s "$dir/a.st" "$dir/b2.st"
# The pulls (the daemon's owner) checked every chunk against the digests
# they served: B sealed both with them instead of hashing every byte again.
ok is "$(t b --json status | $PY -c 'import json,sys; d=json.load(sys.stdin); print(d["puts"], d["puts_verified_by_pull"])')" "2 2"

# 2. striped over two sources (B now holds it too): both send
mark "2. striped over two sources (B now holds it too): both send"
run pull_on c "${ns[2]}" "$want" --from "$A:7070" --from "$B:7070" --streams 2
ok is "$rc" 0
ok is "$(jq_ 'd["id"]')" "$want"
ok is "$(jq_ 'int(all(s["bytes"] > 0 for s in d["sources"]))')" 1
ok is "$(jq_ '[s["streams"] for s in d["sources"]]')" "[2, 2]"
ok is "$(jq_ 'sum(s["bytes"] for s in d["sources"])')" "$((64 * 1048576 + 12))"

# 2b. 2 % of the TCP packets into C dropped (iptables statistic match;
#     cubic, so loss costs what it costs): the pull completes, verified
#     and byte-identical.  No iptables: said, and skipped.
mark "2b. 2 % packet loss into C: the pull completes, verified"
if command -v iptables >/dev/null &&
	ip netns exec "${ns[2]}" iptables -A INPUT -p tcp -m statistic --mode random \
		--probability 0.02 -j DROP 2>"$dir/ipt"; then
	ip netns exec "${ns[2]}" sysctl -qw net.ipv4.tcp_congestion_control=cubic 2>/dev/null
	t c rm "$want" >/dev/null
	lstart=$(date +%s)
	run pull_on c "${ns[2]}" "$want" --from "$A:7070" --from "$B:7070" --streams 2
	ok is "$rc" 0
	ok is "$(jq_ 'd["id"]')" "$want"
	echo "  under 2 % loss: $(jq_ '"%.2f s" % d["transfer_seconds"]'), $(($(date +%s) - lstart)) s in all"
	ip netns exec "${ns[2]}" iptables -D INPUT -p tcp -m statistic --mode random \
		--probability 0.02 -j DROP
	ip netns exec "${ns[2]}" iptables-save | grep -q statistic && ok false
	t c export "$want" "$dir/c.st" --force
	ok cmp -s "$dir/a.st" "$dir/c.st"
else
	echo "  SKIP (loss lane): no iptables with the statistic match: $(cat "$dir/ipt" 2>/dev/null)"
fi

# 3. a source that corrupts every chunk it sends: caught, never registered,
mark "3. a source that corrupts every chunk it sends: caught, never registered,"
#    and the pull finishes from a good source
daemon x "${ns[0]}" "$A:7071" TCAST_FAILPOINTS=peer.corrupt_chunk= || exit 1
t x import "$dir/m.safetensors" >/dev/null 2>&1
t c rm "$want" >/dev/null
run pull_on c "${ns[2]}" "$want" --from "$A:7071"
ok is "$rc" 1
ok has "$out" TC_EDIGEST
ok has "$out" "fail their digest"
ok is "$(t c ls --json | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["artifacts"]))')" 0
run pull_on c "${ns[2]}" "$want" --from "$A:7071" --from "$B:7070" --streams 2
ok is "$rc" 0
ok is "$(jq_ 'd["id"]')" "$want"
echo "  corrupt source: $(jq_ 'd["sources"][0]')"
t c export "$want" "$dir/c.st" --force
ok cmp -s "$dir/a.st" "$dir/c.st"

# 3b. the streams only receive; verifier threads hash and write (pull.c).
#     Failpoint pull.hold_verify holds the verifiers until the streams
#     have received as many chunks as the buffering allows
#     (TCAST_PEER_PULL_BUFFER_MB=16: 4 chunks): receiving goes on while
#     nothing is verified, and stops at the cap.  With the corrupting
#     source among the two, its chunks are still caught once verified,
#     reported as before, and fetched from B.
mark "3b. verify held: the streams receive up to the buffer cap; a corrupt chunk is still caught"
t c rm "$want" >/dev/null
TCAST_FAILPOINTS=pull.hold_verify= TCAST_PEER_PULL_BUFFER_MB=16 \
	run pull_on c "${ns[2]}" "$want" --from "$A:7071" --from "$B:7070" --streams 2
ok is "$rc" 0
ok has "$err" "verify held (failpoint): 4 chunks received, none verified, buffering for 4"
ok is "$(jq_ 'd["id"]')" "$want"
ok is "$(jq_ 'int(d["sources"][0]["bad_chunks"] > 0)')" 1
ok is "$(jq_ 'd["sources"][0]["bytes"]')" 0
ok is "$(jq_ 'd["sources"][1]["bytes"]')" "$((64 * 1048576 + 12))"
t c export "$want" "$dir/c.st" --force
ok cmp -s "$dir/a.st" "$dir/c.st"

# 3c. received in place: on huge pages a host pull receives each chunk
#     into the put's mapping and verifies it there (pull_sink.c);
#     TCAST_PUT_WRITE=inplace takes that path on any pages.  The corrupt
#     source's chunks land where the good ones go, are caught, and are
#     overwritten by B's: the artifact is still the source's bytes.
mark "3c. in place: a corrupt chunk in the put's own memory is caught and refetched"
t c rm "$want" >/dev/null
TCAST_PUT_WRITE=inplace run pull_on c "${ns[2]}" "$want" --from "$A:7071" --from "$B:7070" --streams 2
ok is "$rc" 0
ok is "$(jq_ 'd["in_place"]')" True
ok is "$(jq_ 'd["id"]')" "$want"
ok is "$(jq_ 'int(d["sources"][0]["bad_chunks"] > 0)')" 1
ok is "$(jq_ 'd["sources"][1]["bytes"]')" "$((64 * 1048576 + 12))"
t c export "$want" "$dir/c.st" --force
ok cmp -s "$dir/a.st" "$dir/c.st"
# and the default on this machine's pages says which way it went
t c rm "$want" >/dev/null
run pull_on c "${ns[2]}" "$want" --from "$B:7070" --streams 2
ok is "$rc" 0
if grep -q '\[never\]' /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null; then
	ok is "$(jq_ 'd["in_place"]')" False
fi

# 4. kill -9 of a source mid-pull: the other one finishes it
mark "4. kill -9 of a source mid-pull: the other one finishes it"
daemon y "${ns[0]}" "$A:7072" TCAST_FAILPOINTS=peer.delay_chunk= || exit 1
daemon z "${ns[1]}" "$B:7072" TCAST_FAILPOINTS=peer.delay_chunk= || exit 1
t y import "$dir/m.safetensors" >/dev/null 2>&1
t z import "$dir/m.safetensors" >/dev/null 2>&1
t c rm "$want" >/dev/null
pull_on c "${ns[2]}" "$want" --from "$A:7072" --from "$B:7072" --streams 1 >"$dir/o" 2>"$dir/e" &
pp=$!
sleep 0.4
kill -9 "$(pid_of y)"
wait $pp
rc=$?
ok is "$rc" 0
ok is "$(jq_ 'd["id"]')" "$want"
ok is "$(jq_ 'd["sources"][0]["failed"]')" True
ok is "$(jq_ 'int(d["sources"][1]["bytes"] > 0)')" 1
t c export "$want" "$dir/c.st" --force
ok cmp -s "$dir/a.st" "$dir/c.st"

# 4b. the streams of a source that drops out go to the others: a pull on
#     one CPU (taskset) over three sources starts 2 streams each (8 per CPU
#     shared); once one is killed, each survivor grows to 4
mark "4b. the streams of a dropped source go to the others"
$PY - "$dir/big.safetensors" <<'PYEOF'
import json, os, struct, sys
n = 256 << 20
h = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + os.urandom(n))
PYEOF
daemon r1 "${ns[0]}" "$A:7074" TCAST_FAILPOINTS=peer.delay_chunk= || exit 1
daemon r2 "${ns[1]}" "$B:7074" TCAST_FAILPOINTS=peer.delay_chunk= || exit 1
daemon r3 "${ns[0]}" "$A:7075" TCAST_FAILPOINTS=peer.delay_chunk= || exit 1
big=$(t r1 import "$dir/big.safetensors" 2>/dev/null)
t r2 import "$dir/big.safetensors" >/dev/null 2>&1
t r3 import "$dir/big.safetensors" >/dev/null 2>&1
ip netns exec "${ns[2]}" taskset -c 0 "$T" --socket "$dir/c/d.sock" --json pull "$big" \
	--from "$A:7074" --from "$B:7074" --from "$A:7075" >"$dir/o" 2>"$dir/e" &
pp=$!
sleep 0.3
kill -9 "$(pid_of r1)"
wait $pp
rc=$?
ok is "$rc" 0
ok is "$(jq_ 'd["id"]')" "$big"
echo "  sources: $(jq_ '[(s["addr"], s["streams"], s["failed"]) for s in d["sources"]]')"
ok is "$(jq_ 'd["sources"][0]["failed"]')" True
ok is "$(jq_ 'd["sources"][0]["streams"]')" 2
ok is "$(jq_ '[s["streams"] for s in d["sources"][1:]]')" "[4, 4]"
t c rm "$big" >/dev/null 2>&1

# 5. a stalled source, timed out after peer_timeout; the pull finishes from
#    B in bounded time.  Two ways to stall: a sender that goes quiet with
#    its chunks requested (failpoint peer.stall_chunk: 5 s before its first
#    chunk, so it has requests in flight whatever the timing), and a
#    process stopped outright (SIGSTOP) before the pull: its handshake's
#    deadline.  (A SIGSTOP sent mid-pull races the pull's end: the source
#    may have handed its last chunks to the kernel already.)
mark "5. a stalled source (mid-pull, then SIGSTOP): timed out, the pull finishes from B"
# despite PORT TIMEOUT_MS MAX_S: C pulls from the bad source at $B:PORT
# and from B; it finishes (from B) within MAX_S, the bad source marked
# failed, its error in $src_err.
despite() {
	local start=$(date +%s)
	run pull_on c "${ns[2]}" "$want" --from "$B:$1" --from "$B:7070" --streams 1 --timeout-ms "$2"
	ok is "$rc" 0
	ok is "$(jq_ 'd["id"]')" "$want"
	ok is "$(jq_ 'd["sources"][0]["failed"]')" True
	ok test $(($(date +%s) - start)) -lt "$3"
	src_err=$(jq_ 'd["sources"][0]["error"]')
}
daemon st "${ns[1]}" "$B:7073" TCAST_FAILPOINTS=peer.stall_chunk= || exit 1
t st import "$dir/m.safetensors" >/dev/null 2>&1
t c rm "$want" >/dev/null
despite 7073 1500 20
ok has "$src_err" "timed out"
ok is "$(jq_ 'd["sources"][0]["bytes"]')" 0
t c export "$want" "$dir/c.st" --force
ok cmp -s "$dir/a.st" "$dir/c.st"
t c rm "$want" >/dev/null
kill -STOP "$(pid_of z)"
despite 7072 1500 20
kill -CONT "$(pid_of z)"
ok grep -qE "timed out|deadline" <<<"$src_err"

# 5b. a source that trickles its chunk (4 KiB every 500 ms, each wait well
#     under the 1 s timeout: failpoint peer.trickle_chunk) is dropped once
#     a chunk has taken 12 timeouts, and its chunk comes from B.  Without
#     that bound the pull waited for the trickle, about 8 minutes a chunk.
mark "5b. a source trickling bytes: dropped after 12 timeouts a chunk, the pull finishes from B"
daemon tr "${ns[1]}" "$B:7076" TCAST_FAILPOINTS=peer.trickle_chunk= || exit 1
t tr import "$dir/m.safetensors" >/dev/null 2>&1
t c rm "$want" >/dev/null
despite 7076 1000 40
ok has "$src_err" "too slow: chunk"
ok has "$src_err" "not received in 12000 ms"
t c export "$want" "$dir/c.st" --force
ok cmp -s "$dir/a.st" "$dir/c.st"

# 6. a wrong secret and a garbage client are refused; A serves on
mark "6. a wrong secret and a garbage client are refused; A serves on"
t c rm "$want" >/dev/null
run pull_on c "${ns[2]}" "$want" --from "$A:7070" --secret-file "$dir/wrong"
ok is "$rc" 1
ok has "$out" TC_ECLOSED
ok has "$out" "refused us (another cluster secret"
ip netns exec "${ns[2]}" "$PY" -c '
import socket, sys
s = socket.create_connection((sys.argv[1], 7070), timeout=5)
try:
    s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 20)
    print("closed" if s.recv(100) == b"" else "answered")
except ConnectionResetError:
    print("closed")' "$A" >"$dir/g" 2>&1
ok is "$(cat "$dir/g")" closed
sleep 0.2
ok grep -q "refused: peer '.*' uses another cluster secret" "$dir/a/daemon.log"
ok grep -q "refused: not a tcast cluster handshake" "$dir/a/daemon.log"
run pull_on c "${ns[2]}" "$want" --from "$A:7070"
ok is "$rc" 0

# 6b. one address floods connections that never finish the handshake
#     (300, more than max_conns (256), each reopened as soon as it is
#     closed): handshakes have a pool of their own, and when it is full a
#     newcomer from another address takes the place of the flooder's oldest,
#     while the flooder's own newcomers are refused.  A real pull gets in.
#     (Whether the pool is full at the moment the pull connects depends on
#     timing here; tests/unit/test_peer_server.c checks the pool's rule
#     itself, exactly.)
mark "6b. one address floods silent connections: a pull from another gets in"
ip netns exec "${ns[1]}" "$PY" - "$A" 7070 12 >"$dir/flood" 2>&1 <<'PYEOF' &
import selectors, socket, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sel, opened, end = selectors.DefaultSelector(), 0, time.monotonic() + secs
def connect():
    global opened
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((host, port))
    sel.register(s, selectors.EVENT_READ)
    opened += 1
for _ in range(300):
    connect()
while time.monotonic() < end:
    for key, _ in sel.select(0.1):
        try:
            data = key.fileobj.recv(4096)
        except OSError:
            data = b""
        if not data:  # closed (refused, timed out or evicted): again
            sel.unregister(key.fileobj)
            key.fileobj.close()
            time.sleep(0.002)
            connect()
print(opened)
PYEOF
flood=$!
sleep 3
t c rm "$want" >/dev/null
run pull_on c "${ns[2]}" "$want" --from "$A:7070" --streams 2
[ "$rc" = 0 ] || echo "$out $err" >&2
ok is "$rc" 0
ok is "$(jq_ 'd["id"]')" "$want"
wait $flood
t c rm "$want" >/dev/null
ok test "$(cat "$dir/flood")" -gt 300
run pull_on c "${ns[2]}" "$want" --from "$A:7070"
ok is "$rc" 0

# 7. a cluster secret others can read is refused at start
mark "7. a cluster secret others can read is refused at start"
chmod 644 "$dir/secret"
run ip netns exec "${ns[2]}" "$T" --socket "$dir/w/d.sock" daemon start \
	--set peer_listen="$sub.13:0" --set cluster_secret_file="$dir/secret"
ok is "$rc" 1
ok has "$err" "must be 0600"

# 8. the daemons stop cleanly, and the sanitized build finds nothing in them
daemons_stop 20
ok test -z "$(grep -l 'Sanitizer\|runtime error' "$dir"/*/daemon.log 2>/dev/null)"

summary test_peer
