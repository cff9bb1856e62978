#!/bin/bash
# A view pull against the full pull of the same artifact, between two
# daemons on loopback (docs/peer.md "Views"): `tcast pull REF --view SPEC`
# of a row shard (rank 1 of N) of one F32 matrix fetches only the chunks
# under its rows; the full pull fetches every chunk.  Usage:
#   bench/peer_view.sh [BUILD] [SIZE_MIB] [RANKS]
# Prints both pulls' bytes and seconds (transfer, and end to end: the full
# pull's put + re-hash + seal, the view's realization into the kept view).
set -eu
build=${1:-build}
mib=${2:-512}
ranks=${3:-8}
root=$(cd "$(dirname "$0")/.." && pwd)
T=$root/$build/bin/tcast
PY=/usr/bin/python3
dir=$(mktemp -d /tmp/tcast-bench-view-XXXXXX)
chmod 700 "$dir"
cleanup() {
	for x in a b; do "$T" --socket "$dir/$x/d.sock" daemon stop >/dev/null 2>&1 || true; done
	rm -rf "$dir"
}
trap cleanup EXIT
head -c 48 /dev/urandom | base64 -w0 >"$dir/secret"
chmod 600 "$dir/secret"
mem=$((mib * 2 + 512))MiB
for x in a b; do
	mkdir -m 700 "$dir/$x"
	"$T" --socket "$dir/$x/d.sock" daemon start --host-memory "$mem" --set host_spare=0 \
		--set peer_listen=127.0.0.1:0 --set cluster_secret_file="$dir/secret" >/dev/null
done
addr=$(cat "$dir/a/peer.addr")
rows=$((mib * 1048576 / 4 / 4096))
$PY - "$dir/m.safetensors" "$rows" <<'PYEOF'
import json, os, struct, sys
rows = int(sys.argv[2])
n = rows * 4096 * 4
h = json.dumps({"w": {"dtype": "F32", "shape": [rows, 4096], "data_offsets": [0, n]}}).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for _ in range(n >> 20):
        f.write(os.urandom(1 << 20))
PYEOF
"$T" --socket "$dir/a/d.sock" import "$dir/m.safetensors" --key bench:view >/dev/null 2>&1
k=$((rows / ranks))
spec="{\"slices\": {\"w\": [[0, $k, $((2 * k))]]}}"
"$T" --socket "$dir/b/d.sock" --json pull bench:view --from "$addr" --view "$spec" >"$dir/v.json"
"$T" --socket "$dir/b/d.sock" --json pull bench:view --from "$addr" >"$dir/f.json"
$PY - "$dir/v.json" "$dir/f.json" "$ranks" <<'PYEOF'
import json, sys
v, f = (json.load(open(p)) for p in sys.argv[1:3])
print(f"artifact {f['bytes'] / 2**20:.0f} MiB, row shard 1 of {sys.argv[3]}")
print(f"view pull: {v['bytes_pulled'] / 2**20:.1f} MiB pulled ({v['chunks_pulled']} of {v['chunks']} chunks), "
      f"transfer {v['transfer_seconds']:.3f} s, end to end {v['seconds']:.3f} s")
print(f"full pull: {f['bytes'] / 2**20:.1f} MiB pulled ({f['chunks']} chunks), "
      f"transfer {f['transfer_seconds']:.3f} s, end to end {f['seconds']:.3f} s")
print(f"ratio full / view, end to end: {f['seconds'] / v['seconds']:.1f}x")
PYEOF
