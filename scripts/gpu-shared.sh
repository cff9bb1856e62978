#!/bin/bash
# tcast.shared on the GPU machine (issue 15): the README's zero-branch
# example unchanged as two processes, pytest -m gpu (with the slab ring's
# close-then-new-clients test), and bench_shared.py, whose ring phase is
# followed by a close, a ring-off client and a new ring client on the same
# server ("VERDICT close sequence: ok|FAILED"; on failure a rerun with
# CUDA_LAUNCH_BLOCKING=1 for the faulting call's traceback).  About 4-6
# minutes on an H200 with BENCH_ARGS="--iters 200".
# Runs over the .gpu/ bundle like gpu-run.sh; logs go to $OUT.
set -u
. "$(dirname "$0")/gpu-env.sh"
D=$(mktemp -d /tmp/tcast-shared-XXXX); chmod 700 "$D"
export TCAST_SOCKET="$D/d.sock" TCAST_SHARED_SECRET_FILE="$D/secret"
"$TCAST_BIN" --socket "$TCAST_SOCKET" daemon run --host-memory 24GiB --log-file "$D/daemon.log" & dpid=$!
for _ in $(seq 100); do [ -S "$TCAST_SOCKET" ] && break; sleep 0.1; done
{
	date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
	python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
	echo "== zero-branch example (tests/python/shared_examples/zero_branch_env.py, the README's file unchanged)"
	cd "$D" && cp "$root/tests/python/shared_examples/zero_branch_env.py" demo.py
	export SHARED_TENSOR_BASE_PORT=25537
	SHARED_TENSOR_ROLE=server python3 demo.py > server.out 2>&1 & spid=$!
	for _ in $(seq 300); do (echo > /dev/tcp/127.0.0.1/25537) 2>/dev/null && break; sleep 0.1; done
	echo "-- process B (client): python demo.py"; timeout 120 python3 demo.py; echo "client exit $?"
	echo "-- python3 -m tcast.shared status"; python3 -m tcast.shared status
	kill $spid; wait $spid 2>/dev/null
	echo "-- process A (SHARED_TENSOR_ROLE=server python demo.py) printed:"; cat server.out
	unset SHARED_TENSOR_BASE_PORT; cd "$root"
} > "$OUT/shared-zero-branch.log" 2>&1
cat "$OUT/shared-zero-branch.log"
echo "== test_ring_real (slab rings between two processes, C)"
"$G/tests/test_ring_real" > "$OUT/test_ring_real.log" 2>&1; echo "exit $?" >> "$OUT/test_ring_real.log"
tail -5 "$OUT/test_ring_real.log"
echo "== pytest -m gpu"
(cd "$root" && TC_TEST_HOST_MEMORY=8GiB timeout 300 python3 -m pytest -m gpu -q -s -p no:cacheprovider tests/python/test_shared_gpu.py) > "$OUT/shared-pytest-gpu.log" 2>&1
tail -25 "$OUT/shared-pytest-gpu.log"
echo "== bench_shared.py (ring client, close, ring-off client, close, new ring client: the same server)"
timeout ${BENCH_TIMEOUT:-330} python3 "$root/bench/bench_shared.py" ${BENCH_ARGS:-} \
	--server-log "$OUT/shared-bench-server.log" > "$OUT/shared-bench.log" 2>&1
echo "bench exit $?" >> "$OUT/shared-bench.log"
cat "$OUT/shared-bench.log"
if grep -q '^close sequence: ok' "$OUT/shared-bench.log"; then
	echo "VERDICT close sequence: ok (the server served a ring-off and a new ring client after a ring client closed)"
else
	# Again with every launch synchronous, so the faulting call raises
	# where it is made: the server's traceback lands in its log.
	echo "VERDICT close sequence: FAILED; rerun with CUDA_LAUNCH_BLOCKING=1 (shared-close-blocking*.log)"
	CUDA_LAUNCH_BLOCKING=1 SHARED_TENSOR_BASE_PORT=26600 timeout 120 python3 "$root/bench/bench_shared.py" \
		--close-only --server-log "$OUT/shared-close-blocking-server.log" > "$OUT/shared-close-blocking.log" 2>&1
	echo "exit $?" >> "$OUT/shared-close-blocking.log"
	tail -30 "$OUT/shared-close-blocking.log"; tail -60 "$OUT/shared-close-blocking-server.log"
fi
echo "pytest -m gpu: $(tail -1 "$OUT/shared-pytest-gpu.log")"
kill $dpid; wait $dpid 2>/dev/null
cp "$D/daemon.log" "$OUT/shared-daemon.log" 2>/dev/null
true
