#!/bin/bash
# GPU machine: a second daemon on the same host gets a SIZE GiB artifact
# into a GPU replica from the first daemon's host replica over loopback
# TCP (tcast pull, 4 streams), two ways in the same run:
#   pull then fill:  host replica first, the GPU replica from it
#                    (tcast pull --device cuda:0 --host-copy)
#   straight to GPU: chunks verified in pinned staging, copied into the
#                    daemon's GPU replica, no host replica
#                    (tcast pull --device cuda:0)
# against `tcast import` of the same file from disk (caches dropped) and
# from the page cache into the first daemon.  PEER_GPU_DEVICE= (empty)
# pulls to host memory only (no GPU lines); NO_DROP=1 leaves the page
# cache alone (a shared machine: the disk line is then not cold).  Usage:
#   bench/peer_gpu.sh TCAST_BINARY [SIZE_GIB] [STREAMS]
set -eu
T=${1:?tcast binary}
gib=${2:-16}
streams=${3:-4}
PY=${PY:-python3}
dir=$(mktemp -d /tmp/tcast-peer-gpu-XXXXXX)
cleanup() {
	"$T" --socket "$dir/a/d.sock" daemon stop >/dev/null 2>&1 || true
	"$T" --socket "$dir/b/d.sock" daemon stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT
head -c 48 /dev/urandom | base64 -w0 >"$dir/secret"
chmod 600 "$dir/secret"
mkdir -m 700 "$dir/a" "$dir/b"
for x in a b; do
	"$T" --socket "$dir/$x/d.sock" daemon start --host-memory $((gib + 4))GiB \
		--set peer_listen=127.0.0.1:0 --set cluster_secret_file="$dir/secret" >/dev/null
done
# A real file (blocks on disk), one tensor of SIZE GiB.
$PY - "$dir/m.safetensors" "$gib" <<'PYEOF'
import json, os, struct, sys
n = int(sys.argv[2]) << 30
h = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
h += b" " * ((8 - len(h) % 8) % 8)
blk = os.urandom(64 << 20)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for _ in range(n // len(blk)):
        f.write(blk)
PYEOF
sync
echo "== $(date -u '+%F %T') UTC, $(nproc) cores, $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), ${gib} GiB"
secs() { $PY -c 'import json,sys; print(json.load(sys.stdin)["seconds"])'; }
cold=0
[ -n "${NO_DROP:-}" ] || { echo 3 >/proc/sys/vm/drop_caches 2>/dev/null && cold=1; }
t_disk=$("$T" --socket "$dir/a/d.sock" --json import "$dir/m.safetensors" | secs)
id=$("$T" --socket "$dir/a/d.sock" ls --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["artifacts"][0]["id"])')
"$T" --socket "$dir/a/d.sock" rm "$id" >/dev/null
t_cache=$("$T" --socket "$dir/a/d.sock" --json import "$dir/m.safetensors" | secs)
rm -f "$dir/m.safetensors"
dev=${PEER_GPU_DEVICE-cuda:0}
from=$(cat "$dir/a/peer.addr")
"$T" --socket "$dir/b/d.sock" --json pull "$id" --from "$from" --streams "$streams" \
	${dev:+--device "$dev" --host-copy} >"$dir/p.json"
echo '{}' >"$dir/g.json"
if [ -n "$dev" ]; then
	"$T" --socket "$dir/b/d.sock" rm "$id" >/dev/null
	"$T" --socket "$dir/b/d.sock" --json pull "$id" --from "$from" --streams "$streams" \
		--device "$dev" >"$dir/g.json"
fi
$PY - "$dir/p.json" "$dir/g.json" "$t_disk" "$t_cache" "$cold" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
g = json.load(open(sys.argv[2]))
gb = d["bytes"] / 1e9
disk, cache, cold = float(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
print(f"import from disk{'' if cold else ' (caches NOT dropped)'}: {disk:.2f} s, {gb / disk:.2f} GB/s")
print(f"import from page cache: {cache:.2f} s, {gb / cache:.2f} GB/s")
total = d["seconds"] + d["gpu_seconds"]
print(f"pull then fill (--host-copy): transfer verified {d['transfer_seconds']:.2f} s"
      f" ({gb / d['transfer_seconds']:.2f} GB/s); host replica registered after {d['seconds']:.2f} s;"
      f" GPU replica from it {d['gpu_seconds']:.2f} s more; total {total:.2f} s ({gb / total:.2f} GB/s)")
print("  sources:", json.dumps(d["sources"]))
if g:
    print(f"straight to GPU (pinned staging): transfer verified {g['transfer_seconds']:.2f} s"
          f" ({gb / g['transfer_seconds']:.2f} GB/s); GPU replica sealed after {g['seconds']:.2f} s"
          f" ({gb / g['seconds']:.2f} GB/s); no host replica")
    print("  sources:", json.dumps(g["sources"]))
PYEOF
