#!/bin/bash
# Runs every libFuzzer target for a bounded time, seeded from
# tests/fuzz/corpus/<target>/ (new inputs go to a scratch copy, so the
# committed corpus only grows by hand).  Fails on any crash, leak, timeout
# or OOM.
set -u
build=${1:-build-fuzz}
seconds=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
status=0
for f in "$build"/fuzz/fuzz_*; do
	[ -x "$f" ] || continue
	name=$(basename "$f")
	seed="$root/tests/fuzz/corpus/${name#fuzz_}"
	work=$(mktemp -d)
	[ -d "$seed" ] && cp -r "$seed"/. "$work"/
	dict="$root/tests/fuzz/${name#fuzz_}.dict"
	dictarg=()
	[ -f "$dict" ] && dictarg=(-dict="$dict")
	echo "== $name for ${seconds}s"
	if ! "$f" "${dictarg[@]}" -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=5 \
		-print_final_stats=1 -artifact_prefix="$work/" "$work" 2>"$work.log"; then
		echo "FAIL: $name"
		tail -40 "$work.log"
		status=1
	fi
	grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' "$work.log" | tail -2
	rm -rf "$work" "$work.log"
done
exit $status
