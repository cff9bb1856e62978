#!/bin/bash
# Runs on the GPU machine over the carried .gpu/ bundle (scripts/gpu-bundle.sh)
# and writes every log to $OUT.  Usage: scripts/gpu-run.sh [steps...]
# steps: env gpu python bench pybench fill loader attach stream durable
# (default: all but stream and durable)
set -u
. "$(dirname "$0")/gpu-env.sh"
# The GPU containers lack /run/udev, which cuFile needs to register a file
# (tests/python/test_stream_gpu.py::cufile_volume writes a stand-in record).
export TCAST_TEST_UDEV_STUB=1
steps=${*:-env gpu python bench pybench fill loader attach}
for s in $steps; do
	case $s in
	env)
		{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
		  nproc; free -g; uname -r; python3 -c 'import torch,safetensors,numpy; print(torch.__version__, safetensors.__version__, numpy.__version__)';
		  cat /sys/kernel/mm/transparent_hugepage/shmem_enabled; ulimit -l; df -h /tmp | tail -1; } > "$OUT/env.log" 2>&1
		cat "$OUT/env.log" ;;
	gpu)
		for t in "$G"/tests/test_gpu_real "$G"/tests/test_gpu_tier_real; do
			[ -x "$t" ] || continue
			echo "== $(basename "$t")"
			"$t" > "$OUT/$(basename "$t").log" 2>&1; echo "exit $?" >> "$OUT/$(basename "$t").log"
			tail -15 "$OUT/$(basename "$t").log"
		done ;;
	python)
		echo "== pytest (torch $(python3 -c 'import torch; print(torch.__version__)'))"
		(cd "$root" && TC_GPU_REQUIRE_CONSUMERS=${TC_GPU_REQUIRE_CONSUMERS:-1} TC_TEST_HOST_MEMORY=${TC_TEST_HOST_MEMORY:-12GiB} timeout 400 python3 -m pytest -q -p no:cacheprovider tests/python) > "$OUT/pytest-gpu.log" 2>&1
		tail -15 "$OUT/pytest-gpu.log" ;;
	bench)
		echo "== bench_store"
		"$G/bench/bench_store" --tcast "$G/bin/tcast" --bytes $((8 << 30)) --big-bytes $((16 << 30)) > "$OUT/bench_store.log" 2>&1
		cat "$OUT/bench_store.log" ;;
	fill)
		echo "== replica fills (bench_gpu_fill, bench_replica_fill.py)"
		"$G/bench/bench_gpu_fill" --gib 16 > "$OUT/bench_gpu_fill.log" 2>&1; tail -4 "$OUT/bench_gpu_fill.log"
		python3 "$root/bench/bench_replica_fill.py" > "$OUT/replica_fill.log" 2>&1; cat "$OUT/replica_fill.log" ;;
	loader)
		echo "== loader (bench_gpu_loader, gpu-import-bench)"
		"$G/bench/bench_gpu_loader" --gib 8 > "$OUT/bench_gpu_loader.log" 2>&1; tail -9 "$OUT/bench_gpu_loader.log"
		"$root/scripts/gpu-import-bench.sh" /tmp/tcast-bench-8gib.safetensors 3 > "$OUT/import_bench.log" 2>&1; cat "$OUT/import_bench.log" ;;
	attach)
		echo "== bench_gpu_attach.py"
		python3 "$root/bench/bench_gpu_attach.py" > "$OUT/bench_gpu_attach.log" 2>&1; tail -12 "$OUT/bench_gpu_attach.log" ;;
	stream)
		echo "== bench_stream.py (layer streaming, 8 B decoder, tcast.stream vs accelerate)"
		python3 "$root/bench/bench_stream.py" --json "$OUT/bench_stream.json" > "$OUT/bench_stream.log" 2>&1; tail -6 "$OUT/bench_stream.log" ;;
	durable)
		echo "== gpu-durable.py (issue 13: a durable artifact -> cuda:0 after a restart vs tcast import --device)"
		timeout 300 python3 "$root/scripts/gpu-durable.py" ${DURABLE_GIB:-8} > "$OUT/gpu-durable.log" 2>&1
		echo "exit $?" >> "$OUT/gpu-durable.log"; cat "$OUT/gpu-durable.log" ;;
	pybench)
		echo "== python benches"
		python3 "$root/bench/bench_tensor_dict.py" > "$OUT/bench_tensor_dict.log" 2>&1; tail -8 "$OUT/bench_tensor_dict.log"
		python3 "$root/bench/bench_gpu_load.py" > "$OUT/bench_gpu_load.log" 2>&1; tail -15 "$OUT/bench_gpu_load.log" ;;
	esac
done
