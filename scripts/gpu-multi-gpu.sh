#!/bin/bash
# Several GPUs in one node (issue 17), on a machine with >= 2 GPUs (the
# device tool's nvidia-h200-x2), in one call over a carried folder holding
# .gpu/ (scripts/gpu-bundle.sh), python/, tests/, bench/ and scripts/:
#
#   scripts/gpu-bundle.sh build      # here, then run with carry [".gpu"]:
#   scripts/gpu-multi-gpu.sh         # there; logs and JSON in $OUT
#
# 1. tests/gpu/test_multi_gpu_real.py: sibling-GPU fills, TP=N shards read
#    once, the e2e harness with --materialize-device cuda:RANK;
# 2. the C GPU tests (test_gpu_real, test_gpu_tier_real) and
#    scripts/gpu-multi.py (replicas on two GPUs behind one daemon);
# 3. bench/multi_gpu.py: replica fill GPU->GPU vs the raw peer copy and
#    the host fill, TP=N views of an 8 GiB model vs N x one GPU, and the
#    same from the file (--from-disk).  MODEL_GIB, PEER_MIB override.
set -u
. "$(dirname "$0")/gpu-env.sh"
export PATH="$G/bin:$PATH"
ngpu=$(nvidia-smi -L | wc -l)
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvidia-smi topo -m;
  nproc; free -g; python3 -c 'import torch; print("torch", torch.__version__)'; } > "$OUT/env.log" 2>&1
cat "$OUT/env.log"
echo "== test_multi_gpu_real.py ($ngpu GPUs)"
timeout ${T_TEST:-240} python3 "$root/tests/gpu/test_multi_gpu_real.py" > "$OUT/test_multi_gpu_real.log" 2>&1
echo "exit $?" >> "$OUT/test_multi_gpu_real.log"
cat "$OUT/test_multi_gpu_real.log"
echo "== gpu-multi.py"
timeout 120 python3 "$root/scripts/gpu-multi.py" > "$OUT/gpu-multi.log" 2>&1; echo "exit $?" >> "$OUT/gpu-multi.log"
tail -3 "$OUT/gpu-multi.log"
for t in "$G"/tests/test_gpu_real "$G"/tests/test_gpu_tier_real; do
	[ -x "$t" ] || continue
	echo "== $(basename "$t")"
	timeout 300 "$t" > "$OUT/$(basename "$t").log" 2>&1; echo "exit $?" >> "$OUT/$(basename "$t").log"
	tail -4 "$OUT/$(basename "$t").log"
done
echo "== bench/multi_gpu.py --gpus $ngpu"
timeout ${T_BENCH:-300} python3 "$root/bench/multi_gpu.py" --gpus "$ngpu" --model-gib ${MODEL_GIB:-8} \
	--peer-mib ${PEER_MIB:-4096} --from-disk --dir /tmp/tcast-multigpu --json "$OUT/multi_gpu.json" \
	> "$OUT/multi_gpu.log" 2>&1
echo "exit $?" >> "$OUT/multi_gpu.log"
cat "$OUT/multi_gpu.log"
