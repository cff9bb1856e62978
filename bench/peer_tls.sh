#!/bin/bash
# What TLS costs the peer data path: one `tcast pull` of SIZE GiB between
# two daemons on loopback, with TLS off, then with TLS on (a throwaway CA
# made here with the openssl CLI), one round each.  Usage:
#   bench/peer_tls.sh [BUILD] [SIZE_GIB] [STREAMS] [ORDER...]
# ORDER: the runs, "off on" by default (on a shared machine, run it again
# as "on off" to see how much the order and the load move the figures).
# The artifact's bytes are zeros (a sparse file: TCP, TLS and BLAKE3 do
# not care what the bytes are).  Prints one line per run, and whether
# replicas went out through kernel TLS (the peer server's log says).
set -eu
build=${1:-build}
gib=${2:-1}
streams=${3:-4}
shift $(($# < 3 ? $# : 3))
order=("${@:-off}")
[ $# = 0 ] && order=(off on)
root=$(cd "$(dirname "$0")/.." && pwd)
T=$root/$build/bin/tcast
PY=/usr/bin/python3
. "$root/bench/lib/bench.sh"
dir=$(mktemp -d /tmp/tcast-bench-tls-XXXXXX)
chmod 700 "$dir"
d() { bench_d "$@"; }
cleanup() {
	for n in a b; do d $n daemon stop >/dev/null 2>&1 || true; done
	rm -rf "$dir"
}
trap cleanup EXIT
C=$dir/pki
mkdir -m 700 "$C"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout "$C/ca.key" -out "$C/ca.crt" -days 1 -subj /CN=bench-ca 2>/dev/null
for n in a b; do
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$C/$n.key" -out "$C/$n.csr" -subj "/CN=node-$n" 2>/dev/null
	# The name the pull dials (127.0.0.1): clients check it (tls_verify_name).
	printf 'subjectAltName=DNS:node-%s,IP:127.0.0.1\n' "$n" >"$C/$n.ext"
	openssl x509 -req -in "$C/$n.csr" -CA "$C/ca.crt" -CAkey "$C/ca.key" \
		-CAcreateserial -days 1 -extfile "$C/$n.ext" -out "$C/$n.crt" 2>/dev/null
done
chmod 600 "$C"/*.key
bench_secret "$dir/secret"
bench_sparse "$dir/m.safetensors" $((gib << 30))
bench_header "$(openssl version)"
echo "   ${gib} GiB artifact, $streams streams, loopback"
run() { # off|on
	local tls=()
	for n in a b; do
		rm -rf "${dir:?}/$n"
		mkdir -m 700 "$dir/$n"
		[ "$1" = on ] && tls=(--set "tls_cert=$C/$n.crt" --set "tls_key=$C/$n.key" --set "tls_ca=$C/ca.crt")
		d $n daemon start --host-memory $((gib + 2))GiB --set host_spare=0 \
			--set peer_listen=127.0.0.1:0 --set "cluster_secret_file=$dir/secret" \
			--set "log_file=$dir/$n/d.log" "${tls[@]}" >/dev/null
	done
	local id src
	id=$(d a import "$dir/m.safetensors" 2>/dev/null)
	src=$(cat "$dir/a/peer.addr")
	d b --json pull "$id" --from "$src" --streams "$streams" --no-key >"$dir/p.json"
	$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); b=d["bytes"]*8/1e9; print("TLS %-3s: transfer %.2f Gbit/s (%.2f s, every chunk verified), end to end %.2f Gbit/s" % (sys.argv[2], b / d["transfer_seconds"], d["transfer_seconds"], b / d["seconds"]))' "$dir/p.json" "$1"
	grep -ho "replicas go out .*" "$dir/a/d.log" || true
	for n in a b; do d $n daemon stop >/dev/null; done
}
for o in "${order[@]}"; do run "$o"; done
