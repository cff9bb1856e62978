#!/bin/bash
# The test runner must turn red when any test fails (issue 9: it once summed
# pytest's failures with bc and printed "0 failed" on a machine without bc).
# Each case runs scripts/run-tests.sh in a child on a made-up suite: a ctest
# folder written by hand and a pytest folder, with no bc on the PATH.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
runner="$root/scripts/run-tests.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/tcast-runner.XXXXXX")
trap 'rm -rf "$work"' EXIT
fails=0

# A PATH whose bc always fails, as if it were missing.
mkdir -p "$work/bin"
printf '#!/bin/sh\nexit 127\n' >"$work/bin/bc"
chmod +x "$work/bin/bc"

# suite NAME CTEST_CMDS PYTEST_BODY: a build folder and a pytest folder.
suite() {
	local d="$work/$1"
	mkdir -p "$d/build" "$d/py"
	printf '%s\n' "$2" >"$d/build/CTestTestfile.cmake"
	printf '%s\n' "$3" >"$d/py/test_case.py"
}

# expect NAME RC_WANTED('0' or 'nonzero') LINE_REGEX
expect() {
	local d="$work/$1" out rc
	# env -u: the runner skips pytest under TC_SANITIZED (set when this test
	# itself runs in the sanitized suite); these cases need both runners.
	out=$(cd "$root" && env -u TC_SANITIZED PATH="$work/bin:$PATH" TC_PYTEST_DIR="$d/py" \
		bash "$runner" "$d/build" 2>&1)
	rc=$?
	local line
	line=$(echo "$out" | grep -E '^tests: ' | tail -1)
	if { [ "$2" = 0 ] && [ $rc -ne 0 ]; } || { [ "$2" = nonzero ] && [ $rc -eq 0 ]; }; then
		echo "FAIL $1: exit $rc, wanted $2 ($line)"
		echo "$out" | tail -20
		fails=$((fails + 1))
	elif ! echo "$line" | grep -Eq "$3"; then
		echo "FAIL $1: summary '$line' does not match '$3'"
		fails=$((fails + 1))
	else
		echo "ok   $1: exit $rc, $line"
	fi
}

ok_py='def test_a(): pass
def test_b(): pass'
bad_py='def test_a(): pass
def test_b(): assert 1 == 2, "deliberate"'

suite green 'add_test(ok "true")' "$ok_py"
expect green 0 '^tests: 3 passed, 0 failed'

suite pyfail 'add_test(ok "true")' "$bad_py"
expect pyfail nonzero '^tests: 2 passed, 1 failed'

suite cfail 'add_test(ok "true")
add_test(bad "false")' "$ok_py"
expect cfail nonzero '^tests: 3 passed, 1 failed'

# A collection error (an import that fails) is a failure, not "0 passed".
suite pyerror 'add_test(ok "true")' 'import no_such_module_anywhere
def test_a(): pass'
expect pyerror nonzero '[1-9][0-9]* failed'

# A skipped ctest (exit 77 with SKIP_RETURN_CODE) is neither passed nor failed.
suite skip 'add_test(ok "true")
add_test(sk "sh" "-c" "exit 77")
set_tests_properties(sk PROPERTIES SKIP_RETURN_CODE 77)' "$ok_py"
expect skip 0 '^tests: 3 passed, 0 failed, 1 skipped'

# A test that leaves something in $TMPDIR turns the run red and is named
# (issue 9: make test left /tmp/tcast-* behind); the run still cleans up.
suite litter 'add_test(litter "sh" "-c" "mkdir \"$TMPDIR/tcast-litter-dir\"")' "$ok_py"
expect litter nonzero '^tests: 3 passed, 1 failed'
out=$(cd "$root" && TC_PYTEST_DIR="$work/litter/py" TMPDIR="$work" bash "$runner" "$work/litter/build" 2>&1)
if ! grep -q "left these behind" <<<"$out" || ! grep -q "tcast-litter-dir" <<<"$out" ||
	ls -d "$work"/tcast-suite-* >/dev/null 2>&1; then
	echo "FAIL litter: not named, or the run's folder was not removed"
	fails=$((fails + 1))
else
	echo "ok   litter: named and removed"
fi

echo "runner cases: $((7 - fails)) passed, $fails failed"
[ $fails -eq 0 ]
