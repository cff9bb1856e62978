#!/bin/bash
# Runs the whole suite against one build directory: every ctest program
# (unit, integration, lint, GPU tests through the fake driver; real-GPU
# tests skip with 77) and, for the normal build, the Python tests with
# Debian's /usr/bin/python3.  Ends with one "N passed, N failed" line.
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
passed=0 failed=0 skipped=0

log=$(mktemp)
(cd "$build" && ctest --output-on-failure -j "$(nproc)" --timeout 600) 2>&1 | tee "$log"
c_pass=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\2 \1/p' "$log" | tail -1)
if [ -n "$c_pass" ]; then
	set -- $c_pass
	failed=$((failed + $2))
	passed=$((passed + $1 - $2))
else
	failed=$((failed + 1))
fi
skipped=$(grep -c '\*\*\*Skipped\|Not Run' "$log" || true)
passed=$((passed - skipped))
rm -f "$log"

if [ -z "${TC_SANITIZED:-}" ] && [ -d tests/python ]; then
	# Python loads the library through ctypes; the sanitized build would
	# need its runtime preloaded into the interpreter, so the Python suite
	# runs against the normal build only.
	plog=$(mktemp)
	TCAST_LIB="$root/$build/lib/libtcast.so" TCAST_BIN="$root/$build/bin/tcast" \
		PYTHONPATH="$root/python" PYTHONDONTWRITEBYTECODE=1 \
		/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/python 2>&1 | tee "$plog"
	p=$(grep -Eo '[0-9]+ passed' "$plog" | tail -1 | grep -Eo '[0-9]+')
	f=$(grep -Eo '[0-9]+ (failed|error)' "$plog" | grep -Eo '[0-9]+' | paste -sd+ | bc 2>/dev/null)
	s=$(grep -Eo '[0-9]+ skipped' "$plog" | tail -1 | grep -Eo '[0-9]+')
	passed=$((passed + ${p:-0}))
	failed=$((failed + ${f:-0}))
	skipped=$((skipped + ${s:-0}))
	[ -z "$p" ] && [ -z "$f" ] && failed=$((failed + 1))
	rm -f "$plog"
fi
echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
