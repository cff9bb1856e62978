#!/bin/bash
# A 4 GiB `tcast pull` between two network namespaces (one veth pair)
# against iperf3 with the same number of TCP streams, in the same run
# (issue 12 figures: >= 95% of iperf3).  Needs root, iproute2 and iperf3
# (apt-get install -y iperf3).  Usage:
#   bench/peer_pull.sh [BUILD] [SIZE_GIB] [STREAMS] [ROUNDS]
# STREAMS is a number (1..16, --streams N) or "auto": the pull chooses as
# it does without --streams (a lone source: one stream per 2 CPUs, 4..8,
# or TCAST_PEER_LONE_STREAMS), and iperf3 then runs with the count the
# pull used (read from its JSON), in each round.
# Prints one line per measurement and the ratios; the artifact's bytes are
# zeros (a sparse file: TCP and BLAKE3 do not care what the bytes are).
# SHMEM_ENABLED=advise|never|...: the kernel's shmem_enabled for the run
# (put back after it): whether the receiver's segment gets 2 MiB pages
# (docs/store.md, "Huge pages"); the header says which it was.
set -eu
build=${1:-build}
gib=${2:-4}
streams=${3:-4}
case $streams in
auto) ;;
*[!0-9]* | '') echo "STREAMS: a number or auto, not '$streams'" >&2; exit 2 ;;
esac
mode=$streams # "auto" or the number
rounds=${4:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
T=$root/$build/bin/tcast
PY=/usr/bin/python3
. "$root/bench/lib/bench.sh"
# PEER_PULL_NET=loopback: both daemons and iperf3 on this namespace's
# loopback (127.0.0.1 and 127.0.0.2), for hosts where namespaces cannot be
# made (a container without CAP_SYS_ADMIN); say so with the figures.
net=${PEER_PULL_NET:-netns}
[ "$net" = loopback ] || [ "$(id -u)" = 0 ] || { echo "needs root (ip netns)"; exit 77; }
command -v iperf3 >/dev/null || { echo "needs iperf3: apt-get install -y iperf3"; exit 77; }
thp=/sys/kernel/mm/transparent_hugepage/shmem_enabled
thp_old=$(sed 's/.*\[\(.*\)\].*/\1/' $thp 2>/dev/null || true)
[ -z "${SHMEM_ENABLED:-}" ] || echo "$SHMEM_ENABLED" >$thp
id=$$
A=tcbena$id B=tcbenb$id
dir=$(mktemp -d /tmp/tcast-bench-peer-XXXXXX)
cleanup() {
	"$T" --socket "$dir/a/d.sock" daemon stop >/dev/null 2>&1 || true
	"$T" --socket "$dir/b/d.sock" daemon stop >/dev/null 2>&1 || true
	ip netns pids "$A" 2>/dev/null | xargs -r kill 2>/dev/null || true
	ip netns del "$A" 2>/dev/null || true
	ip netns del "$B" 2>/dev/null || true
	rm -rf "$dir"
	[ -z "${SHMEM_ENABLED:-}" ] || echo "$thp_old" >$thp
}
trap cleanup EXIT
if [ "$net" = loopback ]; then
	inA=() inB=() ipA=127.0.0.1 ipB=127.0.0.2
else
	inA=(ip netns exec "$A") inB=(ip netns exec "$B") ipA=10.99.0.1 ipB=10.99.0.2
	ip netns add "$A"
	ip netns add "$B"
	ip link add "pa$id" type veth peer name "pb$id"
	ip link set "pa$id" netns "$A"
	ip link set "pb$id" netns "$B"
	ip -n "$A" addr add $ipA/24 dev "pa$id"
	ip -n "$B" addr add $ipB/24 dev "pb$id"
	for n in "$A" "$B"; do ip -n "$n" link set lo up; done
	ip -n "$A" link set "pa$id" up
	ip -n "$B" link set "pb$id" up
fi
bench_secret "$dir/secret"
mem=$((gib + 2))GiB
for x in a b; do
	mkdir -m 700 "$dir/$x"
	if [ $x = a ]; then in=("${inA[@]}") ip_=$ipA; else in=("${inB[@]}") ip_=$ipB; fi
	"${in[@]}" "$T" --socket "$dir/$x/d.sock" daemon start --host-memory "$mem" \
		--set host_spare=0 --set peer_listen=$ip_:7070 \
		--set cluster_secret_file="$dir/secret" >/dev/null
done
# A sparse safetensors file of SIZE GiB of zeros, imported into A.
bench_sparse "$dir/m.safetensors" $((gib << 30))
id_=$("$T" --socket "$dir/a/d.sock" import "$dir/m.safetensors" 2>/dev/null)
rm -f "$dir/m.safetensors"
bench_header "$(iperf3 --version | head -1)"
if [ "$net" = loopback ]; then
	echo "   ${gib} GiB artifact, $mode streams, loopback of one namespace (PEER_PULL_NET=loopback)"
else
	echo "   ${gib} GiB artifact, $mode streams, veth pair between two namespaces"
fi
echo "   memfd huge pages: shmem_enabled $(sed 's/.*\[\(.*\)\].*/\1/' $thp 2>/dev/null || echo absent)"

iperf() { # ARGS: extra iperf3 flags; prints Gbit/s received
	"${inA[@]}" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
	local s=$!
	sleep 0.5
	"${inB[@]}" iperf3 -c $ipA -B $ipB -p 5201 -P "$streams" -t 5 -J "$@" >"$dir/ip.json" || true
	wait $s 2>/dev/null || true
	$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9))' "$dir/ip.json"
}
# iperf3 3.12 drives all of -P N's streams from one thread: N processes of
# one stream each (ports 5301..) show what the link carries with N cores.
iperfm() { # prints the N processes' summed Gbit/s received
	local k pids=() cpids=()
	for k in $(seq 0 $((streams - 1))); do
		"${inA[@]}" iperf3 -s -1 -p $((5301 + k)) >/dev/null 2>&1 &
		pids+=($!)
	done
	sleep 0.5
	for k in $(seq 0 $((streams - 1))); do
		"${inB[@]}" iperf3 -c $ipA -B $ipB -p $((5301 + k)) -t 5 -J >"$dir/ipm$k.json" 2>/dev/null &
		cpids+=($!)
	done
	wait "${cpids[@]}" 2>/dev/null || true
	wait "${pids[@]}" 2>/dev/null || true
	$PY -c 'import json,sys
t = 0
for f in sys.argv[1:]:
    try:
        t += json.load(open(f))["end"]["sum_received"]["bits_per_second"]
    except Exception:
        pass
print("%.2f" % (t / 1e9))' "$dir"/ipm*.json
	rm -f "$dir"/ipm*.json
}
pull() { # prints transfer Gbit/s, end-to-end Gbit/s and the streams used
	local sflag=()
	[ "$mode" = auto ] || sflag=(--streams "$mode")
	"$T" --socket "$dir/b/d.sock" rm "$id_" >/dev/null 2>&1 || true
	"${inB[@]}" "$T" --socket "$dir/b/d.sock" --json pull "$id_" --from $ipA:7070 \
		"${sflag[@]}" >"$dir/p.json"
	$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); b=d["bytes"]*8/1e9; print("%.2f %.2f %d" % (b / d["transfer_seconds"], b / d["seconds"], d["sources"][0]["streams"]))' "$dir/p.json"
}
best_ip=0 best_ipz=0 best_ipm=0 best_pull=0 best_e2e=0
max() { $PY -c "import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))" "$1" "$2"; }
for r in $(seq "$rounds"); do
	if [ "$mode" = auto ]; then
		# The pull first, so that iperf3 runs with the streams it chose.
		read -r p e streams <<<"$(pull)"
		i=$(iperf)
		iz=$(iperf -Z)
		im=$(iperfm)
	else
		i=$(iperf)
		iz=$(iperf -Z)
		im=$(iperfm)
		read -r p e _ <<<"$(pull)"
	fi
	echo "round $r: iperf3 -P $streams $i Gbit/s, iperf3 -Z -P $streams $iz Gbit/s, $streams iperf3 processes $im Gbit/s, tcast pull $p Gbit/s (transfer, verified), $e Gbit/s (end to end, with the local daemon's re-hash and seal)"
	best_ip=$(max "$best_ip" "$i")
	best_ipz=$(max "$best_ipz" "$iz")
	best_ipm=$(max "$best_ipm" "$im")
	best_pull=$(max "$best_pull" "$p")
	best_e2e=$(max "$best_e2e" "$e")
done
$PY - "$best_ip" "$best_ipz" "$best_ipm" "$best_pull" "$best_e2e" "$streams" <<'PYEOF'
import sys
ip, ipz, ipm, p, e = map(float, sys.argv[1:6])
n = sys.argv[6]
ref = max(ip, ipz)
print(f"best: iperf3 {ip:.2f}, iperf3 -Z {ipz:.2f}, {n} iperf3 processes {ipm:.2f}, pull {p:.2f} (transfer), {e:.2f} (end to end) Gbit/s")
print(f"ratio pull / best iperf3 -P {n}: {p / ref:.2f} (transfer), {e / ref:.2f} (end to end); goal >= 0.95")
if ipm > 0:
    print(f"ratio pull / {n} iperf3 processes (one stream each): {p / ipm:.2f} (transfer), {e / ipm:.2f} (end to end)")
PYEOF
