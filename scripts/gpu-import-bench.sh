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
# Run 0 makes the daemon's CUDA context (not an import's cost).  Each run
# removes its replica; the driver scrubs freed memory while the next copy
# runs (bench_gpu_fill: 49 instead of 54 GB/s right after a 16 GiB free),
# so the timed runs start 1 s after the last removal, as well as at once.
for i in $(seq 0 "$runs"); do
	for pause in 1 0; do
		[ "$i" = 0 ] && [ "$pause" = 0 ] && continue
		sleep "$pause"
		out=$($T --json import "$f" --device cuda:0)
		echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); print(f'run $i: tcast import --device cuda:0: {d[\"bytes\"]/d[\"seconds\"]/1e9:.2f} GB/s ({d[\"seconds\"]:.3f} s, daemon side; {\"the first: makes the context\" if $i == 0 else \"1 s after the last rm\" if $pause else \"right after an rm\"})')"
		$T rm "$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
	done
done
python3 -c "
import time, torch, safetensors.torch as st
torch.zeros(1, device='cuda'); torch.cuda.synchronize()
t = time.perf_counter(); x = st.load_file('$f', device='cuda'); torch.cuda.synchronize()
s = time.perf_counter() - t
print(f'safetensors.torch.load_file(device=cuda): {$size/s/1e9:.2f} GB/s ({s:.3f} s)')"
$T daemon logs -n 80 | grep "to GPU" | tail -$((2 * runs))
$T daemon stop >/dev/null
rm -rf "$d"
