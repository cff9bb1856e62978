#!/bin/bash
# make demo: the main job end to end on data it makes itself.
#   1. write a sharded Hugging Face-style model (index + 4 shards, bf16)
#   2. start the daemon on the single-node default (unless one runs)
#   3. verify and import the folder under a key (progress, GB/s)
#   4. a second process attaches it zero-copy through the Python SDK and
#      proves it: same physical pages, read-only, checksums match the files
#   5. show what the daemon holds; stop the daemon if the demo started it
#   6. remove the model it wrote (about 1 GiB) unless TCAST_DEMO_KEEP=1
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
case $build in /*) ;; *) build="$root/$build" ;; esac
tcast="$build/bin/tcast"
export TCAST_LIB="$build/lib/libtcast.so" TCAST_BIN="$tcast"
export PYTHONPATH="$root/python" PYTHONDONTWRITEBYTECODE=1
work=${TCAST_DEMO_DIR:-${TMPDIR:-/tmp}/tcast-demo}
model="$work/model"
mib=${TCAST_DEMO_MIB:-1024}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

started=0
# On every exit, failures and Ctrl-C included: stop what the demo started
# and remove what it wrote, unless asked to keep the model.
finish() {
	local rc=$?
	[ "$started" = 1 ] && "$tcast" daemon stop >/dev/null || true
	if [ "${TCAST_DEMO_KEEP:-0}" = 1 ]; then
		echo "kept the model in $model (TCAST_DEMO_KEEP=1)"
	elif [ -z "${TCAST_DEMO_DIR:-}" ]; then
		rm -rf "$work"
	else
		rm -rf "$model"
	fi
	return $rc
}
trap finish EXIT

say "1. writing a ${mib} MiB sharded bf16 model to $model"
/usr/bin/python3 "$root/scripts/make-model.py" "$model" "$mib"
ls -la "$model"

say "2. daemon on the default socket"
if "$tcast" daemon status >/dev/null 2>&1; then
	echo "a daemon is already running; using it"
else
	"$tcast" daemon start
	started=1
fi

say "3. verify and import"
"$tcast" verify "$model"
"$tcast" import "$model" --key demo:model:v1
"$tcast" inspect demo:model:v1 | sed -n 1,12p  # sed reads it all: no SIGPIPE

say "4. a second process attaches it, zero copy"
/usr/bin/python3 - "$model" <<'PY'
import hashlib, json, os, struct, sys, time
import torch
import tcast as tc

model = sys.argv[1]
tc.init(mode="connect")
t0 = time.perf_counter()
art = tc.artifact("demo:model:v1")
res = art.tensor_dict_with_diagnostics(device="cpu")
t1 = time.perf_counter()
tensors = res.tensors
nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
d = res.diagnostics
print(f"attached {len(tensors)} tensors, {nbytes / 2**20:.0f} MiB in "
      f"{(t1 - t0) * 1e3:.2f} ms (attach {d.attach_seconds * 1e3:.2f} ms, "
      f"zero copy: {d.zero_copy}, source: {d.source})")

# Same bytes as the files: hash every tensor from the shared mapping.
index = json.load(open(os.path.join(model, "model.safetensors.index.json")))
t2 = time.perf_counter()
ok = 0
for name, shard in index["weight_map"].items():
    with open(os.path.join(model, shard), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        b, e = hdr[name]["data_offsets"]
        f.seek(8 + n + b)
        want = hashlib.sha256(f.read(e - b)).hexdigest()
    t = tensors[name]
    got = hashlib.sha256(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
    ok += want == got
t3 = time.perf_counter()
print(f"sha256 of all {ok}/{len(index['weight_map'])} tensors match the "
      f"files ({nbytes / (t3 - t2) / 1e9:.2f} GB/s hashing from shared memory)")

# Zero copy: this process's pages of the first tensor are the daemon's.
name = next(iter(tensors))
ptr = tensors[name].data_ptr()
with open("/proc/self/maps") as f:
    for line in f:
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= ptr < hi:
            f = line.split(maxsplit=5)
            print(f"mapping of {name!r}: {f[0]} {f[1]} {f[5].strip() if len(f) > 5 else ''}")
            print("  (r--s: read-only and shared: the daemon's sealed memfd, not a copy)")
            break
print("read-only: writing through the view would fault; the memfd is sealed")
PY

say "5. what the daemon holds"
"$tcast" ls
"$tcast" daemon status
