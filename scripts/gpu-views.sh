#!/bin/bash
# Runs on the GPU machine (the device tool) over a carried folder holding
# .gpu/ (scripts/gpu-bundle.sh), python/, tests/, bench/ and scripts/:
# views on a real GPU (tests/gpu/test_views_gpu.py, test_views.py's CUDA
# case) and bench/bench_views.py --gpu on the 8 GiB model.  Logs go to $OUT.
set -u
. "$(dirname "$0")/gpu-env.sh"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc;
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'; } > "$OUT/env.log" 2>&1
cat "$OUT/env.log"
echo "== test_views_gpu.py"
timeout ${T_TEST:-150} python3 "$root/tests/gpu/test_views_gpu.py" --cases ${CASES:-60} > "$OUT/test_views_gpu.log" 2>&1
echo "exit $?" >> "$OUT/test_views_gpu.log"
cat "$OUT/test_views_gpu.log" | tail -20
echo "== test_views.py::test_view_on_cuda"
(cd "$root" && timeout 60 python3 -m pytest -q -p no:cacheprovider "tests/python/test_views.py::test_view_on_cuda") > "$OUT/pytest-views-cuda.log" 2>&1
tail -3 "$OUT/pytest-views-cuda.log"
echo "== bench_views.py --gpu (8 GiB)"
timeout ${T_BENCH:-200} python3 "$root/bench/bench_views.py" --gpu --no-host --n 64 --rows 8192 --cols 8192 \
	--json "$OUT/bench_views.json" > "$OUT/bench_views.log" 2>&1
echo "exit $?" >> "$OUT/bench_views.log"
cat "$OUT/bench_views.log"
