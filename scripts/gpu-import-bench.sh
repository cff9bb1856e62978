#!/bin/bash
# GPU machine: `tcast import --device cuda:0` of a page-cached file through
# the daemon, against safetensors.torch.load_file(device="cuda") of the same
# file in the same run.  Usage: gpu-import-bench.sh FILE [runs]
set -u
f=$1; runs=${2:-3}
G=$(cd "$(dirname "$0")/.." && pwd)/.gpu
d=$(mktemp -d); sock=$d/run/d.sock
T="$G/bin/tcast --socket $sock"
size=$(stat -c %s "$f")
$T daemon start --host-memory 4GiB --set gpu_memory=90% >/dev/null
cat "$f" > /dev/null
for i in $(seq "$runs"); do
	out=$($T --json import "$f" --device cuda:0)
	echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); print(f'tcast import --device cuda:0: {d[\"bytes\"]/d[\"seconds\"]/1e9:.2f} GB/s ({d[\"seconds\"]:.3f} s, daemon side)')"
	$T rm "$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
done
python3 -c "
import time, torch, safetensors.torch as st
torch.zeros(1, device='cuda'); torch.cuda.synchronize()
t = time.perf_counter(); x = st.load_file('$f', device='cuda'); torch.cuda.synchronize()
s = time.perf_counter() - t
print(f'safetensors.torch.load_file(device=cuda): {$size/s/1e9:.2f} GB/s ({s:.3f} s)')"
$T daemon logs -n 40 | grep "to GPU" | tail -3
$T daemon stop >/dev/null
rm -rf "$d"
