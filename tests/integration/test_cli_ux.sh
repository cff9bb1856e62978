#!/bin/bash
# The CLI as a newcomer meets it (issue 9) and as a hostile file meets the
# terminal (issue 10, item 12), through the real binary and a real daemon:
#   help and usage for every verb of the table, strict option values,
#   id prefixes, one JSON document per verb (errors too), escaped human
#   output, progress lines that end, `export -`, ISO times, what stop
#   drops, restart keeping the configuration, status without a daemon,
#   and no /tmp/tcast-* left behind.
set -u
T=${TCAST:?}
DATA=${TC_TEST_DATA:?}
PY=/usr/bin/python3
before=$(ls -d /tmp/tcast-* 2>/dev/null | sort)
dir=$(mktemp -d "${TMPDIR:-/tmp}/tcast-ux-XXXXXX")
sock=$dir/run/d.sock
pass=0 fail=0
t() { "$T" --socket "$sock" "$@"; }
ok() { if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $*" >&2; fi; }
# run CMD...: $out, $err and $rc of one run
run() { "$@" >"$dir/o" 2>"$dir/e"; rc=$?; out=$(cat "$dir/o"); err=$(cat "$dir/e"); }
has() { grep -qF -- "$2" <<<"$1" || { echo "  no '$2' in: $1" >&2; return 1; }; }
hasnt() { ! grep -qF -- "$2" <<<"$1" || { echo "  unwanted '$2' in: $1" >&2; return 1; }; }
is() { [ "$1" = "$2" ] || { echo "  got '$1', want '$2'" >&2; return 1; }; }
# one JSON document on stdout (json.load refuses trailing documents)
one_json() { $PY -c 'import json,sys; json.load(open(sys.argv[1]))' "$dir/o" 2>/dev/null || { echo "  not one JSON document: $(head -c 300 "$dir/o")" >&2; return 1; }; }
jq_() { $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$dir/o"; }
cleanup() { t daemon stop >/dev/null 2>&1; rm -rf "$dir"; }
trap cleanup EXIT

# ------------------------------------------------ 1. help, from the table
verbs=$("$T" help | awk '/^  [a-z]/ {print $1}')
ok test "$(wc -w <<<"$verbs")" -ge 9
for v in $verbs; do
	for h in --help -h; do
		run "$T" "$v" "$h"
		ok is "$rc" 0
		ok is "$(head -1 <<<"$out" | cut -d' ' -f1-3)" "usage: tcast $v"
		ok is "$err" ""
	done
	run "$T" help "$v"
	ok is "$rc" 0
	ok is "$(head -1 <<<"$out" | cut -d' ' -f1-3)" "usage: tcast $v"
	# an unknown option is a usage error, for every verb
	case $v in daemon) args="stop --bogus" ;; keys) args="set --bogus" ;; *) args="--bogus" ;; esac
	run "$T" "$v" $args
	ok is "$rc" 2
	ok has "$err" "error: TC_EINVAL:"
done
for sub in start run restart stop status logs; do
	run "$T" daemon "$sub" --help
	ok is "$rc" 0
	ok has "$out" "tcast daemon stop [--timeout SECONDS]"
done
run "$T" --json help import
ok one_json
ok is "$(jq_ 'd["verb"], d["usage"].startswith("tcast import")')" "import True"
run "$T" --json help
ok one_json
run "$T" help no-such-verb
ok is "$rc" 2
run "$T" help
ok is "$rc" 0
ok has "$out" "usage: tcast"

ok t daemon start --host-memory 256MiB >/dev/null
id=$(t import "$DATA/tiny-llama" --key ux:a 2>/dev/null)
# --help never acts: not a lookup, not a removal, not a status
run t inspect --help
ok is "$rc" 0
ok has "$out" "usage: tcast inspect"
run t rm ux:a --help
ok is "$rc" 0
run t keys ux:a -h
ok is "$rc" 0
ok has "$out" "usage: tcast keys"
ok t inspect ux:a >/dev/null
run t status --help
ok hasnt "$out" "running, pid"
run t keys set ux:a "$id" --bogus
ok is "$rc" 2

# ------------------------------------------- 2. strict option values
bad() { # EXIT_STATUS OPTION VALUE -- CMD...
	local want=$1 o=$2 v=$3
	shift 4
	run t "$@"
	ok is "$rc" "$want"
	ok has "$err" "$o: '$v'"
}
bad 2 --timeout abc -- daemon stop --timeout abc
ok t daemon status >/dev/null # the daemon still runs (atoi made it 0: SIGKILL)
bad 2 --timeout -5 -- daemon stop --timeout -5
bad 2 --timeout 0x10 -- daemon stop --timeout=0x10
bad 2 --timeout 99999999999999999999999 -- daemon stop --timeout 99999999999999999999999
bad 2 --expect abc -- import "$DATA/dtypes.safetensors" --key ux:b --expect abc
bad 2 --expect -1 -- import "$DATA/dtypes.safetensors" --key ux:b --expect -1
bad 2 --expect 18446744073709551616 -- import "$DATA/dtypes.safetensors" --key ux:b --expect 18446744073709551616
bad 2 --expect 1x -- keys set ux:a "$id" --expect 1x
bad 2 --device gpu0 -- import "$DATA/dtypes.safetensors" --device gpu0
bad 2 --device cuda:abc -- import "$DATA/dtypes.safetensors" --device cuda:abc
bad 2 --device cuda:-1 -- import "$DATA/dtypes.safetensors" --device cuda:-1
bad 2 --device cuda: -- import "$DATA/dtypes.safetensors" --device cuda:
bad 2 --policy hot -- import "$DATA/dtypes.safetensors" --policy hot
bad 2 -n abc -- daemon logs -n abc
bad 2 -n -3 -- daemon logs -n -3
bad 2 --host-memory 12XB -- daemon start --host-memory 12XB
bad 2 --host-memory -1GiB -- daemon start --host-memory -1GiB
bad 2 --host-memory inf -- daemon start --host-memory inf
bad 2 --host-memory 1e30 -- daemon restart --host-memory 1e30
bad 2 --io-threads 0 -- daemon start --io-threads 0
bad 2 --io-threads 65 -- daemon start --io-threads 65
bad 2 --log-level loud -- daemon start --log-level loud
run t import "$DATA/dtypes.safetensors" --key ""
ok is "$rc" 2
ok has "$err" "--key: the value is empty"
run t import "$DATA/dtypes.safetensors" --key
ok is "$rc" 2
ok has "$err" "--key needs a value"
run t import "$DATA/dtypes.safetensors" --expect 0
ok is "$rc" 2 # --expect without --key
run t daemon start --set nokey
ok is "$rc" 2
ok t daemon status >/dev/null
ok is "$(t --json ls | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["artifacts"]))')" 1

# ----------------------------------------------------- 3. id prefixes
hex=${id#*:}
run t --json inspect "${hex:0:4}"
ok is "$rc" 0
ok is "$(jq_ 'd["id"]')" "$id"
run t --json inspect "${id%%:*}:${hex:0:7}"
ok is "$(jq_ 'd["id"]')" "$id"
run t inspect "${id%%:*}:${hex:0:3}"
ok is "$rc" 1
ok has "$err" "error: TC_EINVAL:"
ok has "$err" "at least 4 hex digits"
id2=$(t import "$DATA/dtypes.safetensors" 2>/dev/null)
run t keys set ux:b "${id2#*:}" # a prefix (here the whole hex) as the target
ok is "$rc" 0
ok is "$(t --json inspect ux:b | $PY -c 'import json,sys; print(json.load(sys.stdin)["id"])')" "$id2"

# -------------------------------------------- 4. one JSON document, always
json_ok() { # EXIT_STATUS CMD...: exit status as given, stdout one JSON document
	local want=$1
	shift
	run t --json "$@"
	ok is "$rc" "$want"
	ok one_json
}
json_ok 0 ls
json_ok 0 status
json_ok 0 daemon status
json_ok 0 inspect ux:a
json_ok 0 keys
json_ok 0 keys ux:a
json_ok 0 keys set ux:c "$id"
json_ok 0 import "$DATA/dtypes.safetensors"
json_ok 0 export ux:a "$dir/a.safetensors"
ok is "$(jq_ 'd["path"]')" "$dir/a.safetensors"
json_ok 0 rm ux:c
ok is "$(jq_ 'd["removed"]')" "['ux:c']"
json_ok 1 rm ux:b ux:no-such
ok is "$(jq_ 'd["removed"], d["error"]["code"]')" "['ux:b'] TC_ENOTFOUND"
json_ok 0 verify "$DATA/tiny-llama" "$DATA/dtypes.safetensors"
ok is "$(jq_ 'd["valid"], len(d["results"])')" "True 2"
json_ok 1 verify "$DATA/tiny-llama" "$DATA/hostile/st/len_7.safetensors"
ok is "$(jq_ 'd["valid"], [r["ok"] for r in d["results"]]')" "False [True, False]"
json_ok 0 daemon logs -n 3
json_ok 1 inspect ux:no-such
ok is "$(jq_ 'd["error"]["code"]')" TC_ENOTFOUND
ok has "$err" "error: TC_ENOTFOUND: "
json_ok 2 daemon stop --timeout abc
ok is "$(jq_ 'd["error"]["code"], d["error"]["usage"]')" "TC_EINVAL True"
json_ok 2 inspect
json_ok 1 import /nonexistent
ok has "$err" "error: ENOENT: "
json_ok 1 export ux:no-such "$dir/x.safetensors"
# errors name the user's paths, not temporaries the user never made
run t daemon restart --set host_memory=lots
ok is "$rc" 1
ok has "$err" "error: TC_EBADCONFIG: key 'host_memory'"
ok hasnt "$err" "/tmp/tcast-set"
ok t daemon status >/dev/null # a refused restart leaves it running
# (a parent that is a file fails as root too)
run t export ux:a "$dir/a.safetensors/out.safetensors"
ok is "$rc" 1
ok has "$err" "'$dir/a.safetensors/out.safetensors'"
ok hasnt "$err" ".tmp."

# --------------------------------------- 5. human output is escaped
evil() { # FILE NAME METAKEY METAVALUE (the last three as Python literals)
	$PY - "$@" <<'PY'
import ast, json, struct, sys
name, mk, mv = (ast.literal_eval(a) for a in sys.argv[2:5])
hdr = {"__metadata__": {mk: mv},
       name: {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"abcd")
PY
}
raw_ok() { ! LC_ALL=C grep -q $'\x1b\|\x07\|\xe2\x80\xae\|\xe2\x81\xa6\|\xc2\x9b' "$1"; }
# Control characters never enter the store (names are checked at the
# door, issue 10 finding 11): the import is refused, and the refusal and
# verify's report are escaped.
evil "$dir/evil.safetensors" '"w\x1b[31mRED\x1b]0;pwned\x07\u202eevil\u2066"' \
	'"note\x1b[2J"' '"bidi\u202dx\x9b31m"'
run t import "$dir/evil.safetensors" --key ux:evil
ok is "$rc" 1
ok has "$err" "TC_EINVAL"
ok has "$err" 'U+001B'
ok raw_ok "$dir/e"
run t verify "$dir/evil.safetensors"
ok raw_ok "$dir/o"
ok raw_ok "$dir/e"
# Bidi overrides are valid text and do enter: human output escapes them.
evil "$dir/bidi.safetensors" '"w\u202eevil\u2066"' '"note"' '"bidi\u202dx"'
eid=$(t import "$dir/bidi.safetensors" --key ux:evil 2>/dev/null)
ok test -n "$eid"
run t inspect ux:evil
ok is "$rc" 0
ok has "$out" 'w\u202eevil\u2066'
ok has "$out" 'note = bidi\u202dx'
ok raw_ok "$dir/o"
run t ls
ok raw_ok "$dir/o"
run t inspect $'no\x1bkey'
# refused at the door: the daemon quotes it escaped, and the CLI shows that
# quote as is (its backslashes are escapes, not doubled)
ok has "$err" "reference: control character U+001B at byte 2 in 'no\\x1bkey'"
ok raw_ok "$dir/e"
# --json keeps the real name (JSON escapes it)
run t --json inspect ux:evil
ok is "$(jq_ 'd["tensor_table"][0]["name"] == "w\u202eevil\u2066"')" True

# ----------------------------------------- 6. progress lines always end
$PY - "$dir/big.safetensors" <<'PY'
import json, os, struct, sys
n = 48 << 20
h = json.dumps({"big": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    f.write(os.urandom(n))
PY
# in a pseudo-terminal, so the bar is drawn: OUT is what the terminal got
tty_run() {
	$PY - "$@" <<'PY'
import os, pty, sys
out = bytearray()
def rd(fd):
    b = os.read(fd, 65536)
    out.extend(b)
    return b
status = pty.spawn(sys.argv[1:], rd)
open(os.environ["TTY_OUT"], "wb").write(out)
sys.exit(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8)
PY
}
# every line that holds a bar ends with it (nothing glued after the bar)
bars_end() { $PY - "$1" <<'PY'
import re, sys
data = open(sys.argv[1], "rb").read().replace(b"\r\n", b"\n")
bars = 0
for line in data.split(b"\n"):
    for seg in line.split(b"\r"):
        if re.match(rb"\[[# ]{30}\]", seg):
            bars += 1
            if not re.fullmatch(rb"\[[# ]{30}\] +\d+% \S+ \S+ / \S+ \S+ ", seg):
                print("bar line not ended:", seg, file=sys.stderr)
                sys.exit(1)
print(bars, "bar frames", file=sys.stderr)
PY
}
export TTY_OUT=$dir/tty
ok tty_run "$T" --socket "$sock" import "$dir/big.safetensors" --key ux:big
ok bars_end "$dir/tty"
ok grep -aq "^tc1:\|^tc[0-9]:" <(tr -d '\r' <"$dir/tty")
# a failing import (compare-and-swap refused) ends its line too
tty_run "$T" --socket "$sock" import "$dir/big.safetensors" --key ux:big --expect 9
ok bars_end "$dir/tty"
ok grep -aq "^error: TC_ECONFLICT" <(tr -d '\r' <"$dir/tty")
# interrupted while the bar is drawn (Ctrl-C): the line still ends
tty_int() {
	$PY - "$@" <<'PY'
import os, signal, sys
pid, fd = os.forkpty()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out, sent = bytearray(), False
while True:
    try:
        b = os.read(fd, 65536)
    except OSError:
        break
    if not b:
        break
    out += b
    if not sent and b"%" in out:
        os.kill(pid, signal.SIGINT)
        sent = True
_, st = os.waitpid(pid, 0)
open(os.environ["TTY_OUT"], "wb").write(out)
sys.exit(0 if sent else 1)
PY
}
"$T" --socket "$sock" rm ux:big >/dev/null 2>&1
ok tty_int "$T" --socket "$sock" import "$dir/big.safetensors"
ok bars_end "$dir/tty"
ok is "$(tail -c 1 "$dir/tty" | od -An -c | tr -d ' ')" '\n'
# tiny imports show no meaningless rate
run t import "$DATA/dtypes.safetensors"
ok hasnt "$err" "0.00 GB/s"
ok hasnt "$err" "GB/s"
run t import "$dir/big.safetensors"
ok is "$rc" 0

# ------------------------------------ 7. export to stdout, ISO-8601 times
t export ux:a - >"$dir/stdout.safetensors"
ok is "$?" 0
ok cmp "$dir/stdout.safetensors" "$dir/a.safetensors"
ok test ! -e ./-
t export ux:a - | cmp - "$dir/a.safetensors"
ok is "$?" 0
tty_run "$T" --socket "$sock" export ux:a -
ok is "$?" 2
ok grep -aq "refusing to write safetensors bytes to a terminal" "$dir/tty"
run t --json export ux:a -
ok is "$rc" 2
ok one_json
run t keys ux:a
ok grep -Eq '^  gen 1 +tc[0-9]:[0-9a-f]+  [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$' <<<"$out"
ok hasnt "$out" "unix_ms"
run t --json keys ux:a
ok is "$(jq_ 'isinstance(d["history"][0]["unix_ms"], int), d["history"][0]["time_utc"].endswith("Z")')" "True True"

# -------------------------------------------------------- 8. lifecycle
n=$(t --json status | $PY -c 'import json,sys; print(json.load(sys.stdin)["artifacts"])')
run t daemon stop
ok is "$rc" 0
ok has "$out" "dropped $n artifacts ("
ok has "$out" "held only in memory"
run t status
s_rc=$rc s_out=$out
run t daemon status
ok is "$rc" 1
ok is "$s_rc" "$rc"
ok is "$s_out" "$out"
ok has "$out" "not running"
run t --json status
ok is "$rc" 1
ok one_json
ok is "$(jq_ 'd["running"]')" False
# restart keeps the running daemon's configuration
printf 'io_threads: 3\n' >"$dir/d.yaml"
ok t daemon start --host-memory 48MiB --config "$dir/d.yaml" --set job_threads=3 --log-level debug --log-format json >/dev/null
t import "$DATA/dtypes.safetensors" >/dev/null 2>&1
run t daemon restart
ok is "$rc" 0
ok has "$out" "dropped 1 artifact ("
run t --json status
ok is "$(jq_ 'd["host_budget_bytes"], d["io_threads"], d["config"]["job_threads"], d["config"]["log_level"]')" "50331648 3 3 debug"
ok is "$(jq_ 'd["config"]["log_format"]')" json
# a GPU load's threads follow io_threads (at most 10) unless set
ok is "$(jq_ 'd["config"]["gpu_load_threads"]')" 3
# options given to restart override what it keeps
run t --json daemon restart --host-memory 40MiB
ok one_json
ok is "$(jq_ 'd["stopped"]["dropped_artifacts"], d["started"]["socket"]')" "0 $sock"
run t --json status
ok is "$(jq_ 'd["host_budget_bytes"], d["io_threads"]')" "41943040 3"
run t --json daemon stop
ok one_json
ok is "$(jq_ 'd["stopped"], d["dropped_artifacts"]')" "True 0"

# ------------------------------------------ 9. nothing left in /tmp
# make demo removes the model it wrote (a small one here) unless asked to
# keep it; it runs on a private socket, never the user's daemon.
root=$(cd "$(dirname "$0")/../.." && pwd)
# The demo's second process is Python, which cannot load a sanitized
# libtcast through ctypes (run-tests.sh skips pytest there for the same
# reason): the demo runs in the normal build's suite.
if [ -z "${TC_SANITIZED:-}" ] && $PY -c 'import torch' 2>/dev/null; then
	mkdir -p "$dir/demo"
	TMPDIR=$dir/demo TCAST_SOCKET=$dir/demo/run/d.sock TCAST_DEMO_MIB=64 \
		bash "$root/scripts/demo.sh" "${TC_BUILD:?}" >"$dir/demo.log" 2>&1
	ok is "$?" 0
	ok test ! -e "$dir/demo/tcast-demo"
	TMPDIR=$dir/demo TCAST_SOCKET=$dir/demo/run/d.sock TCAST_DEMO_MIB=64 TCAST_DEMO_KEEP=1 \
		bash "$root/scripts/demo.sh" "$TC_BUILD" >"$dir/demo.log" 2>&1
	ok is "$?" 0
	ok test -e "$dir/demo/tcast-demo/model/model.safetensors.index.json"
	ok grep -q "kept the model" "$dir/demo.log"
	"$T" --socket "$dir/demo/run/d.sock" daemon status >/dev/null 2>&1
	ok is "$?" 1 # the demo stopped the daemon it started
fi
after=$(ls -d /tmp/tcast-* 2>/dev/null | grep -v "^$dir\$" | sort)
new=$(comm -13 <(echo "$before") <(echo "$after") | grep -E '^/tmp/tcast-set-' || true)
ok is "$new" ""

echo "test_cli_ux: $pass passed, $fail failed"
[ "$fail" = 0 ]
