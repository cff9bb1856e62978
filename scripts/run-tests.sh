#!/bin/bash
# Runs the whole suite against one build directory: every ctest program
# (unit, integration, lint, GPU tests through the fake driver; real-GPU
# tests skip with 77) and, for the normal build, the Python tests with
# Debian's /usr/bin/python3.  Ends with one "N passed, N failed" line and
# exits non-zero when anything failed.
#
# The verdict rests on each runner's exit status first and on the counts it
# prints second: a summary line we fail to parse (a new pytest wording, a
# crash before the summary) can only add a failure, never hide one.  Only
# shell arithmetic is used: a fresh Debian has no bc (issue 9: the runner
# once summed pytest's failures with bc and reported green without it).
#
# TC_PYTEST_DIR overrides the Python test folder (tests/python), and
# TC_PYTHON the interpreter; tests/integration/test_runner.sh uses both to
# prove that a failing case turns this script red.
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
pydir=${TC_PYTEST_DIR:-tests/python}
python=${TC_PYTHON:-/usr/bin/python3}
passed=0 failed=0 skipped=0

# The tests put their temporaries under $TMPDIR (tests/lib t_tmpdir, the
# shell tests' mktemp, Python's tempfile): here a folder of this run's own.
# Whatever a test leaves in it is named and counted as a failure (issue 9:
# `make test` used to leave /tmp/tcast-* behind), then removed.
suite_tmp=$(mktemp -d "${TMPDIR:-/tmp}/tcast-suite-XXXXXX")
export TMPDIR=$suite_tmp

# last_count REGEX FILE: the number before REGEX on the last summary line.
last_count() {
	local n
	n=$(grep -Eo "[0-9]+ $1\b" "$2" | tail -1 | grep -Eo '^[0-9]+')
	echo "${n:-0}"
}

log=$(mktemp)
(cd "$build" && ctest --output-on-failure -j "$(nproc)" --timeout 600) >"$log" 2>&1
c_rc=$?
cat "$log"
c_line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
if [ -n "$c_line" ]; then
	c_failed=$(echo "$c_line" | sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/')
	c_total=$(echo "$c_line" | sed -E 's/.*out of ([0-9]+).*/\1/')
	c_skipped=$(grep -c '(Skipped)\|(Not Run)' "$log")
	failed=$((failed + c_failed))
	skipped=$((skipped + c_skipped))
	passed=$((passed + c_total - c_failed - c_skipped))
	# ctest red with no failure counted (a crash of ctest itself): count one.
	[ "$c_rc" -ne 0 ] && [ "$c_failed" -eq 0 ] && failed=$((failed + 1))
else
	echo "run-tests: ctest printed no summary (exit $c_rc)" >&2
	failed=$((failed + 1))
fi
rm -f "$log"

if [ -z "${TC_SANITIZED:-}" ] && [ -d "$pydir" ]; then
	# Python loads the library through ctypes; the sanitized build would
	# need its runtime preloaded into the interpreter, so the Python suite
	# runs against the normal build only.
	plog=$(mktemp)
	TCAST_LIB="$root/$build/lib/libtcast.so" TCAST_BIN="$root/$build/bin/tcast" \
		PYTHONPATH="$root/python" PYTHONDONTWRITEBYTECODE=1 \
		"$python" -m pytest -q -p no:cacheprovider "$pydir" >"$plog" 2>&1
	p_rc=$?
	cat "$plog"
	summary=$(grep -E '^=*.*[0-9]+ (passed|failed|error|errors|skipped)' "$plog" | tail -1)
	echo "$summary" >"$plog"
	p=$(last_count passed "$plog")
	f=$(($(last_count failed "$plog") + $(last_count 'errors?' "$plog")))
	s=$(last_count skipped "$plog")
	passed=$((passed + p))
	skipped=$((skipped + s))
	failed=$((failed + f))
	# pytest exits 0 (all passed) or 5 (nothing collected: that is a
	# failure here too, the folder exists); anything else without a
	# counted failure is a crash or an interrupted run.
	if [ "$p_rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "run-tests: pytest exited $p_rc with no failure counted" >&2
		failed=$((failed + 1))
	fi
	rm -f "$plog"
fi
left=$(find "$suite_tmp" -mindepth 1 -maxdepth 1 ! -name 'pytest-of-*' | sort)
if [ -n "$left" ]; then
	echo "run-tests: the tests left these behind in \$TMPDIR:" >&2
	echo "$left" | head -20 >&2
	failed=$((failed + 1))
fi
rm -rf "$suite_tmp"
echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
