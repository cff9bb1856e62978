# shellcheck shell=bash
# gpu-env.sh - sourced by the GPU-machine scripts (gpu-run.sh, gpu-shared.sh,
# gpu-views.sh, gpu-multi-gpu.sh): the carried .gpu/ bundle
# (scripts/gpu-bundle.sh) on the library and Python paths, $OUT made.
# Sets root (the checkout), G (the bundle) and OUT.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
G="$root/.gpu"
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$G/libs:$G/lib:${LD_LIBRARY_PATH:-}"
[ -d "$G/net/bin" ] && export PATH="$G/net/bin:$PATH"
export TCAST_LIB="$G/lib/libtcast.so" TCAST_BIN="$G/bin/tcast"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# The machine's own pytest when it has one (its plugins expect it); else
# the Debian copy carried in the bundle, with plugin autoload off.
if python3 -c 'import pytest' 2>/dev/null; then
	export PYTHONPATH="$root/python"
else
	export PYTHONPATH="$root/python:$G/py" PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
fi
