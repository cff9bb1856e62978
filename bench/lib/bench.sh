# shellcheck shell=bash
# bench.sh - what the peer benches share (fanout.sh, peer_pull.sh,
# peer_tls.sh).  Source it after setting T (the tcast binary) and PY.
#   bench_header EXTRA  the "== date, cores, kernel, EXTRA" line
#   bench_secret FILE   a fresh cluster secret, mode 0600
#   bench_sparse FILE BYTES
#                       a safetensors file of one U8 tensor of BYTES zeros,
#                       sparse (TCP, TLS and BLAKE3 do not care what the
#                       bytes are, and it costs no disk)
#   bench_d NAME ARGS...  tcast talking to the daemon of $dir/NAME

bench_header() {
	echo "== $(date -u '+%F %T') UTC, $(nproc) cores, kernel $(uname -r)${1:+, $1}"
}

bench_secret() { (umask 077; head -c 48 /dev/urandom | base64 -w0 >"$1"); }

bench_sparse() {
	$PY - "$1" "$2" <<'PYEOF'
import json, struct, sys
n = int(sys.argv[2])
h = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    f.truncate(8 + len(h) + n)
PYEOF
}

bench_d() { local n=$1; shift; "$T" --socket "$dir/$n/d.sock" "$@"; }
