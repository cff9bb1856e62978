#!/bin/bash
# Fan-out: one seed to N receivers (default 8), each in its own network
# namespace on a bridge, every link capped with tc tbf at both ends of its
# veth, so that the links and not this machine's cores are the
# bottleneck.  A global store (its own namespace) gives the sources; the
# receivers pull with no --from, so they find each other through it and
# swap chunks while they pull (docs/peer.md, "Fan-out").  Same run: the
# time of one receiver alone, then of all N at once; prints the ratio
# (issue 12 target: <= 1.25) and how many copies left the seed.
# Also prints each receiver's time, CPU seconds, and with FANOUT_TRACE=1
# what every node sent per 0.5 s (from its bridge port's counters) and how
# busy the CPU was while the N ran; FANOUT_PERF=FILE records a profile of
# the machine meanwhile, FANOUT_KEEP=1 keeps the daemon logs.
# Needs root and iproute2.  Usage:
#   bench/fanout.sh [BUILD] [SIZE_MIB] [RECEIVERS] [RATE] [STREAMS]
# STREAMS: per source, or "auto" (the default: tcast pull chooses, 8 per
# usable CPU shared among the sources, docs/peer.md "Data path").
# Memory: the seed and every receiver hold a copy (SIZE x (N + 1)).
set -eu
build=${1:-build}
mib=${2:-1024}
n=${3:-8}
rate=${4:-2gbit}
streams=${5:-auto}
sflag=()
[ "$streams" = auto ] || sflag=(--streams "$streams")
root=$(cd "$(dirname "$0")/.." && pwd)
T=$root/$build/bin/tcast
. "$root/scripts/netns-lib.sh"
PY=/usr/bin/python3
. "$root/bench/lib/bench.sh"
[ "$(id -u)" = 0 ] || { echo "needs root (ip netns)"; exit 77; }
id=$$
br=tcfb$((id % 100000))
sub="10.$((150 + id % 50)).$(((id / 50) % 250))"
names=(gs seed)
ports=()
for i in $(seq 1 "$n"); do names+=("r$i"); done
dir=$(mktemp -d /tmp/tcast-bench-fanout-XXXXXX)
chmod 700 "$dir"
cleanup() {
	for x in "${names[@]}"; do "$T" --socket "$dir/$x/d.sock" daemon stop --timeout 10 >/dev/null 2>&1 || true; done
	"$T" global stop --state-dir "$dir/gs" >/dev/null 2>&1 || true
	for x in "${names[@]}"; do ip netns del "tcf$x$id" 2>/dev/null || true; done
	ip link del "$br" 2>/dev/null || true
	if [ -n "${FANOUT_KEEP:-}" ]; then echo "   kept $dir (daemon logs)"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
ip link add "$br" type bridge
ip link set "$br" up
k=10
for x in "${names[@]}"; do
	k=$((k + 1))
	ns=tcf$x$id
	netns_join "$ns" "$br" "$k-$id" "$sub.$k"
	# FANOUT_SYSCTL="KEY=VALUE ...": in every node (e.g. to try
	# net.ipv4.tcp_slow_start_after_idle=0).
	for kv in ${FANOUT_SYSCTL:-}; do ip netns exec "$ns" sysctl -qw "$kv"; done
	# Both directions of the node's link.
	ip netns exec "$ns" tc qdisc add dev "v$k-$id" root tbf rate "$rate" burst 1mb latency 20ms
	tc qdisc add dev "b$k-$id" root tbf rate "$rate" burst 1mb latency 20ms
	eval "addr_$x=$sub.$k"
	ports+=("b$k-$id")
done
bench_secret "$dir/secret"
ip netns exec "tcfgs$id" "$T" global start --state-dir "$dir/gs" --cluster-secret-file "$dir/secret" \
	--listen "$addr_gs:7470" >/dev/null
mem=$(((mib * 2 + 1024) >> 10))GiB
for x in "${names[@]:1}"; do
	mkdir -m 700 "$dir/$x"
	a=addr_$x
	ip netns exec "tcf$x$id" "$T" --socket "$dir/$x/d.sock" daemon start --host-memory "$mem" \
		--set host_spare=0 --set "global=$addr_gs:7470" --set "cluster_secret_file=$dir/secret" \
		--set "node_name=$x" --set "peer_listen=${!a}:7070" >/dev/null
done
bench_sparse "$dir/m.safetensors" $((mib << 20))
art=$("$T" --socket "$dir/seed/d.sock" import "$dir/m.safetensors" 2>/dev/null)
rm -f "$dir/m.safetensors"
for _ in $(seq 100); do
	ip netns exec tcfr1$id "$T" --socket "$dir/r1/d.sock" global resolve "$art" --via-daemon >/dev/null 2>&1 && break
	sleep 0.1
done
bench_header
echo "   $mib MiB artifact, 1 seed -> $n receivers, every link $rate (tbf, both ends), $streams streams per source"

now() { date +%s.%N; }
calc() { $PY -c "print($1)"; } # no bc on a fresh Debian
pull_on() { # receiver: a pull with sources from the global store only
	ip netns exec "tcf$1$id" "$T" --socket "$dir/$1/d.sock" --json pull "$art" \
		"${sflag[@]}" >"$dir/$1.json" 2>"$dir/$1.err"
}
clear() { for x in "${names[@]:2}"; do "$T" --socket "$dir/$x/d.sock" rm "$art" >/dev/null 2>&1 || true; done; }

# CPU seconds (user + system) the daemons of this bench used so far.
daemon_cpu() {
	$PY - "$dir" <<'PYEOF'
import os, sys
tck = os.sysconf("SC_CLK_TCK")
t = 0
for pid in os.listdir("/proc"):
    try:
        if pid.isdigit() and sys.argv[1].encode() in open(f"/proc/{pid}/cmdline", "rb").read():
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            t += int(f[11]) + int(f[12])
    except OSError:
        pass
print(t / tck)
PYEOF
}
# CPU seconds of this shell's waited-for children (the pulls), from `times`
# written to a file (in the shell itself: a subshell's count starts at 0).
cpu_of() { tail -1 "$1" | $PY -c 'import re,sys; print(sum(int(m)*60+float(s) for m,s in re.findall(r"(\d+)m([\d.]+)s", sys.stdin.read())))'; }

# One receiver alone.
clear
c0=$(daemon_cpu)
times >"$dir/times0"
t0=$(now)
pull_on r1 || { cat "$dir/r1.err"; exit 1; }
t1=$(calc "$(now) - $t0")
c1=$(daemon_cpu)
times >"$dir/times1"
printf '   one receiver alone:   %6.2f s  (%.2f Gbit/s; CPU: the daemons %.1f s, the pull %.1f s)\n' "$t1" \
	"$(calc "$mib * 8 * 1.048576 / 1000 / $t1")" "$(calc "$c1 - $c0")" \
	"$(calc "$(cpu_of "$dir/times1") - $(cpu_of "$dir/times0")")"

# All of them at once.
clear
sleep 1 # the global store forgets the removed replicas
c0=$(daemon_cpu)
times >"$dir/times0"
t0=$(now)
pids=()
if [ -n "${FANOUT_PERF:-}" ]; then # a profile of the whole machine meanwhile
	perf record -a -g -F 299 -o "$FANOUT_PERF" -- sleep 30 >/dev/null 2>&1 &
	perfpid=$!
fi
if [ "${FANOUT_TRACE:-}" = 1 ]; then
	# A node's transmit is its bridge port's receive.
	$PY - "$dir/trace" "${ports[@]:1}" <<'PYEOF' &
import sys, time
with open(sys.argv[1], "w") as f:
    while True:
        cpu = open("/proc/stat").readline().split()[1:]
        row = [time.clock_gettime(time.CLOCK_REALTIME), sum(map(int, cpu)), int(cpu[3]) + int(cpu[4])]
        for b in sys.argv[2:]:
            row.append(int(open(f"/sys/class/net/{b}/statistics/rx_bytes").read()))
        print(*row, file=f, flush=True)
        time.sleep(0.5)
PYEOF
	tracer=$!
fi
for x in "${names[@]:2}"; do (pull_on "$x" && now >"$dir/$x.end") & pids+=($!); done
bad=0
for p in "${pids[@]}"; do wait "$p" || bad=$((bad + 1)); done
tn=$(calc "$(now) - $t0")
[ -z "${tracer:-}" ] || kill "$tracer"
[ -z "${perfpid:-}" ] || { kill -INT "$perfpid"; wait "$perfpid" || true; }
c1=$(daemon_cpu)
times >"$dir/times1"
p0=$(cpu_of "$dir/times0") p1=$(cpu_of "$dir/times1")
[ "$bad" = 0 ] || { echo "   $bad pulls failed"; cat "$dir"/r*.err; exit 1; }
read -r from_seed from_peers declined < <($PY - "$dir" "$addr_seed:7070" "${names[@]:2}" <<'PYEOF'
import json, sys
d, seed, names = sys.argv[1], sys.argv[2], sys.argv[3:]
s = p = n = 0
for x in names:
    for src in json.load(open(f"{d}/{x}.json"))["sources"]:
        if src["addr"] == seed:
            s += src["bytes"]
            n += src.get("declined", 0)
        else:
            p += src["bytes"]
print(s, p, n)
PYEOF
)
printf '   %d receivers at once:  %6.2f s  (slowest; %.2f Gbit/s aggregate)\n' "$n" "$tn" \
	"$(calc "$n * $mib * 8 * 1.048576 / 1000 / $tn")"
printf '   the seed sent %.2f copies, receivers swapped %.2f copies; the seed said "ask your peers" %d times\n' \
	"$(calc "$from_seed / ($mib * 1048576)")" "$(calc "$from_peers / ($mib * 1048576)")" "$declined"
printf '   CPU: the daemons %.1f s, the pulls %.1f s, in %.1f s on %d cores\n' "$(calc "$c1 - $c0")" \
	"$(calc "$p1 - $p0")" "$tn" "$(nproc)"
printf '   each receiver (s):'
for x in "${names[@]:2}"; do printf ' %.2f' "$(calc "$(cat "$dir/$x.end") - $t0")"; done
echo
printf '   each receiver, streams opened-retired/sources:'
for x in "${names[@]:2}"; do
	printf ' %s' "$($PY -c 'import json,sys; s=json.load(open(sys.argv[1]))["sources"]; print("%d-%d/%d" % (sum(x.get("streams", 0) for x in s), sum(x.get("streams_retired", 0) for x in s), len(s)))' "$dir/$x.json")"
done
echo
if [ -n "${tracer:-}" ]; then
	echo "   per 0.5 s: CPU busy %, then Mbit/s sent by the seed and by each receiver:"
	$PY - "$dir/trace" "$t0" <<'PYEOF'
import sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
for a, b in zip(rows, rows[1:]):
    dt = b[0] - a[0]
    busy = 100 - 100 * (b[2] - a[2]) / max(1, b[1] - a[1])
    print("   %5.1f s %3.0f%% " % (b[0] - float(sys.argv[2]), busy) +
          " ".join("%4.0f" % ((y - x) * 8 / dt / 1e6) for x, y in zip(a[3:], b[3:])))
PYEOF
fi
printf '   ratio (%d receivers / one alone): %.2f  (target <= 1.25)\n' "$n" "$(calc "$tn / $t1")"
