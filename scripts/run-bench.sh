#!/bin/bash
# make bench: the benchmarks that run on any machine (the GPU ones run on
# the GPU machine: see bench/README.md).
set -eu
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
echo "== $(date -u +%F) $(uname -m), $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB"
"$root/$build/bench/bench_store" --tcast "$root/$build/bin/tcast" "$@"
if [ -f "$root/bench/bench_tensor_dict.py" ]; then
	TCAST_LIB="$root/$build/lib/libtcast.so" TCAST_BIN="$root/$build/bin/tcast" \
		PYTHONPATH="$root/python" /usr/bin/python3 "$root/bench/bench_tensor_dict.py"
fi
