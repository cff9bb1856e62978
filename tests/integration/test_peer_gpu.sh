#!/bin/bash
# GPU replicas in the peer data path (issue 12), on the fake CUDA driver
# (tests/fakecuda): a GPU-only artifact (imported straight to a GPU, no
# host copy) is reported to the global store as a source of tier gpu, and
# its node's peer server sends it through device-to-host staging; another
# node pulls it byte-identical; a GPU sender that corrupts a chunk is
# caught and the chunk refetched; eviction and rm withdraw the source.
# Loopback TCP, a global store and three daemons.
set -u
T=${TCAST:?}
. "$(dirname "$0")/../lib/cluster.sh"
FAKE=${TC_BUILD:?}/fakecuda/libcuda.so.1
[ -e "$FAKE" ] || { echo "SKIP: no fake CUDA driver at $FAKE"; exit 77; }
dir=$(mktemp -d /tmp/tcast-peergpu-XXXXXX)
chmod 700 "$dir"
d() { local n=$1; shift; TCAST_CUDA_LIB=$FAKE TC_FAKECUDA_DEVICES=1 "$T" --socket "$dir/$n/d.sock" "$@"; }
nodes=(a b c)
cleanup() {
	for n in "${nodes[@]}"; do d "$n" daemon stop --timeout 10 >/dev/null 2>&1; done
	g stop >/dev/null 2>&1
	[ "$fail" = 0 ] || for n in "${nodes[@]}"; do echo "--- $n"; tail -n 20 "$dir/$n/daemon.log"; done >&2
	rm -rf "$dir"
}
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap - EXIT
new_secret "$dir/secret"

g start --listen 127.0.0.1:0 --lease-ms 3000 >/dev/null || { echo "cannot start the global store" >&2; exit 1; }
G=$(cat "$dir/gs/global.addr")
start_daemon() { # name [ENV...]
	local n=$1; shift
	mkdir -p "$dir/$n" && chmod 700 "$dir/$n"
	env TCAST_CUDA_LIB="$FAKE" TC_FAKECUDA_DEVICES=1 "$@" "$T" --socket "$dir/$n/d.sock" \
		daemon start --host-memory 1GiB \
		--set "global=$G" --set "cluster_secret_file=$dir/secret" \
		--set "node_name=node-$n" --set "peer_listen=127.0.0.1:0" \
		--set peer_timeout_ms=3000 --set gpu_memory=64MiB >/dev/null ||
		{ echo "cannot start daemon $n" >&2; exit 1; }
}
# c corrupts every chunk it sends (one byte flipped).
start_daemon a
start_daemon b
start_daemon c TCAST_FAILPOINTS=peer.corrupt_chunk=
ok wait_for 15 live 3

# 40 MiB: 10 chunks of 4 MiB; m2 has the same layout, other bytes.
mk() {
	$PY - "$1" <<'PYEOF'
import json, os, struct, sys
n = 40 << 20
h = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + os.urandom(n))
PYEOF
}
mk "$dir/m.safetensors"
mk "$dir/m2.safetensors"
# The bytes to compare with: a host import exported, on b, then removed.
id=$(d b import "$dir/m.safetensors" 2>/dev/null)
ok test -n "$id"
d b export "$id" "$dir/want.st"
d b rm "$id" >/dev/null
id2=$(d b import "$dir/m2.safetensors" 2>/dev/null)
ok test -n "$id2"
d b export "$id2" "$dir/want2.st"
d b rm "$id2" >/dev/null
# tier counts of node NAME in `global status --json`: "host=H gpu=G"
tiers() {
	g status --json | $PY -c '
import json, sys
for n in json.load(sys.stdin)["nodes"]:
    if n["name"] == sys.argv[1]:
        r = n.get("replicas", {})
        print("host=%d gpu=%d" % (r.get("host", 0), r.get("gpu", 0)))' "node-$1"
}
tiers_are() { test "$(tiers "$1")" = "$2"; }

mark "1. a GPU-only artifact on a is a source of tier gpu at the global store"
ok test "$(d a import "$dir/m.safetensors" --key gm:v1 --device cuda:0 2>"$dir/a.imp")" = "$id"
ok wait_for 10 tiers_are a "host=0 gpu=1"
# resolve names it, tier gpu
ok wait_for 10 sh -c "TCAST_CUDA_LIB=$FAKE '$T' --socket '$dir/b/d.sock' --json global resolve gm:v1 --via-daemon | grep -q '\"gpu\"'"

mark "2. b pulls it from a's GPU replica (sources from the global store): byte-identical"
ok d b --json pull gm:v1 >"$dir/b.json" 2>"$dir/b.err"
ok test "$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$dir/b.json")" = "$id"
d b export "$id" "$dir/b.st" --force
ok cmp -s "$dir/want.st" "$dir/b.st"
# a still holds no host copy: what it sent came from GPU memory
ok tiers_are a "host=0 gpu=1"

mark "3. a corrupt chunk from a GPU sender is caught and refetched from the other"
ok test "$(d c import "$dir/m.safetensors" --device cuda:0 2>/dev/null)" = "$id"
ok wait_for 10 tiers_are c "host=0 gpu=1"
d b rm "$id" >/dev/null
ok d b --json pull "$id" --from "$(cat "$dir/c/peer.addr")" --from "$(cat "$dir/a/peer.addr")" >"$dir/b2.json" 2>"$dir/b2.err"
bad=$($PY -c '
import json, sys
d = json.load(open(sys.argv[1])); c = open(sys.argv[2]).read().strip()
print(sum(s["bad_chunks"] for s in d["sources"] if s["addr"] == c))' "$dir/b2.json" "$dir/c/peer.addr")
ok test "${bad:-0}" -ge 1
d b export "$id" "$dir/b2.st" --force
ok cmp -s "$dir/want.st" "$dir/b2.st"
ok grep -q "chunk [0-9]* from $(cat "$dir/c/peer.addr") fails its digest" "$dir/b2.err"

mark "3b. eviction withdraws a GPU source"
# c's budget holds one 40 MiB replica: importing another to its GPU evicts
# the GPU-only $id, and the global store hears that c no longer holds it.
ok test "$(d c import "$dir/m2.safetensors" --device cuda:0 2>/dev/null)" = "$id2"
ok grep -q "evicting GPU 0 replica of '$id'" "$dir/c/daemon.log"
# (a, and b since its pull, still hold it: the answer names them, c no more)
sources_of() { d b global resolve "$1" --via-daemon 2>/dev/null | grep -o 'node-[a-c]' | sort -u | tr '\n' ' '; }
ok wait_for 10 sh -c "test \"\$(TCAST_CUDA_LIB=$FAKE '$T' --socket '$dir/b/d.sock' global resolve '$id' --via-daemon 2>/dev/null | grep -o 'node-[a-c]' | sort -u | tr '\n' ' ')\" = 'node-a node-b '"
ok test "$(sources_of "$id2")" = "node-c "
ok test "$(tiers c)" = "host=0 gpu=1"

mark "4. b pulls straight into its GPU: no host replica; a client attaches the daemon's GPU replica"
d b rm "$id" >/dev/null
ok wait_for 10 tiers_are b "host=0 gpu=0"
# (by id: b's key gm:v1 still names the copy removed above)
ok d b --json pull "$id" --from "$(cat "$dir/a/peer.addr")" --device cuda:0 >"$dir/bg.json" 2>"$dir/bg.err"
ok test "$($PY -c 'import json,sys; d = json.load(open(sys.argv[1])); print(d["id"], d["gpu_direct"])' "$dir/bg.json")" = "$id True"
ok wait_for 10 tiers_are b "host=0 gpu=1"
ok test "$(d b --json inspect "$id" | $PY -c 'import json,sys; print(sorted(r["tier"] for r in json.load(sys.stdin)["replicas"]))')" = "['gpu']"
# (ctypes cannot load a sanitized libtcast)
if [ -z "${TC_SANITIZED:-}" ]; then
	# The fake maps GPU memory at host addresses: read the attached
	# replica's bytes and compare with the file's tensor data.
	got=$(TCAST_CUDA_LIB=$FAKE TC_FAKECUDA_DEVICES=1 $PY - "$TC_BUILD/lib/libtcast.so" "$dir/b/d.sock" "$id" "$dir/m.safetensors" <<'PYEOF'
import ctypes, hashlib, struct, sys
lib = ctypes.CDLL(sys.argv[1])
lib.tc_artifact_data.restype = ctypes.c_void_p
lib.tc_artifact_size.restype = ctypes.c_uint64
lib.tc_artifact_device.restype = ctypes.c_int32
c, a = ctypes.c_void_p(), ctypes.c_void_p()
err = ctypes.create_string_buffer(512)
assert lib.tc_client_connect(sys.argv[2].encode(), ctypes.byref(c), err, 512) == 0, err.value
rc = lib.tc_attach_gpu(c, sys.argv[3].encode(), 0, ctypes.byref(a))
assert rc == 0, rc
raw = open(sys.argv[4], "rb").read()
data = raw[8 + struct.unpack("<Q", raw[:8])[0]:]
dev = ctypes.string_at(lib.tc_artifact_data(a), len(data))
print(lib.tc_artifact_device(a), hashlib.sha256(dev).hexdigest() == hashlib.sha256(data).hexdigest())
PYEOF
)
	ok test "$got" = "0 True"
fi
# the attach used the pulled replica: still no host replica on b
ok tiers_are b "host=0 gpu=1"
# --host-copy: the old way, host replica first, GPU replica from it
d b rm "$id" >/dev/null
ok d b --json pull "$id" --from "$(cat "$dir/a/peer.addr")" --device cuda:0 --host-copy >"$dir/bh.json" 2>"$dir/bh.err"
ok wait_for 10 tiers_are b "host=1 gpu=1"
ok sh -c "! '$T' --socket '$dir/b/d.sock' pull '$id' --host-copy >/dev/null 2>&1"

mark "5. rm on a withdraws its GPU source"
d a rm "$id" >/dev/null
ok wait_for 10 tiers_are a "host=0 gpu=0"
# a's peer server no longer serves it
d b rm "$id" >/dev/null
ok sh -c "! TCAST_CUDA_LIB=$FAKE '$T' --socket '$dir/b/d.sock' pull '$id' --from '$(cat "$dir/a/peer.addr")' --no-key >/dev/null 2>&1" 


# 6. bind(publish=True): a Python process's binding on a is a source
#    (tier gpu) after the artifact itself is removed there; b pulls it;
#    swap(publish=True) makes it a source of the new artifact instead.
#    (ctypes cannot load a sanitized libtcast)
if [ -z "${TC_SANITIZED:-}" ]; then
	mark "6. a published binding is a source; its swap publishes the new artifact"
	ROOT=$(cd "$(dirname "$0")/../.." && pwd)
	d b rm "$id" >/dev/null 2>&1
	ok test "$(d a import "$dir/m.safetensors" 2>/dev/null)" = "$id"
	ok test "$(d a import "$dir/m2.safetensors" 2>/dev/null)" = "$id2"
	# The binding lives as long as this process: it steps when told.
	mkfifo "$dir/go"
	TCAST_SOCKET="$dir/a/d.sock" TCAST_LIB="$TC_BUILD/lib/libtcast.so" PYTHONPATH="$ROOT/python" \
		TCAST_CUDA_LIB=$FAKE TC_FAKECUDA_DEVICES=1 $PY - "$id" "$id2" "$dir" <<'PYEOF' &
import sys, tcast as tc
id1, id2, d = sys.argv[1:4]
go = open(d + "/go")
bd = tc.artifact(id1).bind("cuda:0", publish=True)
open(d + "/bound", "w").write(bd.artifact_id)
go.readline()
bd.swap(id2, publish=True)
open(d + "/swapped", "w").write(bd.artifact_id)
go.readline()
bd.close()
PYEOF
	py=$!
	exec 7>"$dir/go"
	ok wait_for 20 test -s "$dir/bound"
	# a's artifact goes (host and GPU tier): only the binding holds it
	d a rm "$id" >/dev/null
	ok wait_for 10 tiers_are a "host=1 gpu=1"
	ok d b --json pull "$id" --from "$(cat "$dir/a/peer.addr")" >"$dir/b5.json" 2>"$dir/b5.err"
	d b export "$id" "$dir/b5.st" --force
	ok cmp -s "$dir/want.st" "$dir/b5.st"
	echo >&7
	ok wait_for 20 test -s "$dir/swapped"
	ok test "$(cat "$dir/swapped")" = "$id2"
	d a rm "$id2" >/dev/null
	ok wait_for 10 tiers_are a "host=0 gpu=1"
	ok d b --json pull "$id2" --from "$(cat "$dir/a/peer.addr")" >"$dir/b6.json" 2>"$dir/b6.err"
	d b export "$id2" "$dir/b6.st" --force
	ok cmp -s "$dir/want2.st" "$dir/b6.st"
	# the old content is no longer served by the binding
	d b rm "$id" >/dev/null 2>&1
	ok sh -c "! TCAST_CUDA_LIB=$FAKE '$T' --socket '$dir/b/d.sock' pull '$id' --from '$(cat "$dir/a/peer.addr")' --no-key >/dev/null 2>&1"
	echo >&7
	exec 7>&-
	wait $py
	ok test $? = 0
	# closed: no source left on a
	ok wait_for 10 tiers_are a "host=0 gpu=0"
fi

# nothing the sanitizers saw in the daemons (the ASan build)
ok test -z "$(grep -l 'Sanitizer\|runtime error' "$dir"/*/daemon.log 2>/dev/null)"
echo "test_peer_gpu: $pass passed, $fail failed"
[ "$fail" = 0 ]
