#!/bin/bash
# tcast inspect REF --view SPEC [--keep] [--device D] through the real
# binary and daemon: the view's table and bytes against the artifact, the
# view kept under its id (made once, held after, by another command too),
# a GPU replica of it on the fake driver, and bad views: the error names
# the tensor, the dim and the bound, exit 1 (2 for a malformed spec), no
# key left, and the daemon serving on.
set -u
T=${TCAST:?}
DATA=${TC_TEST_DATA:?}
PY=/usr/bin/python3
FAKE=${TC_BUILD:?}/fakecuda/libcuda.so.1
dir=$(mktemp -d "${TMPDIR:-/tmp}/tcast-view-XXXXXX")
sock=$dir/d.sock
pass=0 fail=0
t() { "$T" --socket "$sock" "$@"; }
ok() { if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $*" >&2; fi; }
run() { "$@" >"$dir/o" 2>"$dir/e"; rc=$?; out=$(cat "$dir/o"); err=$(cat "$dir/e"); }
has() { grep -qF -- "$2" <<<"$1" || { echo "  no '$2' in: $1" >&2; return 1; }; }
is() { [ "$1" = "$2" ] || { echo "  got '$1', want '$2'" >&2; return 1; }; }
jq_() { $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$dir/o"; }
cleanup() { t daemon stop >/dev/null 2>&1; rm -rf "$dir"; }
trap cleanup EXIT

env=()
[ -e "$FAKE" ] && env=(env TCAST_CUDA_LIB="$FAKE" TC_FAKECUDA_DEVICES=1)
"${env[@]}" "$T" --socket "$sock" daemon start --host-memory 256MiB >/dev/null 2>&1 || { echo "daemon did not start" >&2; exit 1; }
t import "$DATA/dtypes.safetensors" --key m >/dev/null 2>&1
spec='{"names":["f32"],"slices":{"f32":[[1,2,9]]},"transpose":[0,1],"dtype":"BF16"}'

# The plan: table, id, bytes against the artifact; nothing kept.
run t inspect m --view "$spec"
ok is "$rc" 0
ok has "$out" "f32                                              BF16     [7,5]"
ok has "$out" "reads:    140 B of the artifact's"
ok has "$out" "kept:     no"
run t --json inspect m --view "$spec"
ok is "$(jq_ 'd["bytes"], d["bytes_needed"], d["pieces"], d["kept_id"]')" "70 140 5 None"
vid=$(jq_ 'd["view_id"]')
ok has "$vid" "view:tc2:"

# Kept: made now, then held (the key is the view id).
run t --json inspect m --view "$spec" --keep
ok is "$(jq_ 'd["kept"]')" "made now"
kid=$(jq_ 'd["kept_id"]')
run t --json keys "$vid"
ok is "$(jq_ 'd["id"]')" "$kid"
run t --json inspect m --view "$spec" --keep
ok is "$(jq_ 'd["kept"], d["kept_id"]')" "held already $kid"
run t inspect m --view "$spec"
ok has "$out" "kept:     $kid (held already)"
run t --json inspect "$kid"
ok is "$(jq_ 'd["metadata"]["tcast.view"]')" "$vid"

# On a GPU (the fake driver): the kept view gets a replica there.
if [ -e "$FAKE" ]; then
	run env TCAST_CUDA_LIB="$FAKE" TC_FAKECUDA_DEVICES=1 "$T" --socket "$sock" --json inspect m --view "$spec" --device cuda:0
	ok is "$rc" 0
	ok is "$(jq_ 'd["kept"], d["device"]')" "held already 0"
	run t --json inspect "$kid"
	ok is "$(jq_ '[r["tier"] for r in d["replicas"]]')" "['host', 'gpu']"
fi

# Bad views: the message names tensor, dim and bound; nothing is kept.
keys_before=$(t --json keys)
run t inspect m --view '{"slices":{"f32":[[1,2,19]]}}' --keep
ok is "$rc" 1
ok is "$err" "error: TC_EINVAL: view: tensor 'f32': dim 1: slice [2, 19) outside the shape (size 11)"
run t inspect m --view '{"slices":{"f32":[[3,0,1]]}}'
ok is "$err" "error: TC_EINVAL: view: tensor 'f32': dim 3 out of range (rank 2)"
run t inspect m --view '{"slices":{"f32":[[0,4,2]]}}' --keep
ok is "$err" "error: TC_EINVAL: view: tensor 'f32': dim 0: reversed slice [4, 2)"
run t inspect m --view '{"names":["i64"],"dtype":"F16"}' --keep
ok has "$err" "error: TC_EBADDTYPE: view: tensor 'i64': cannot cast I64 to F16"
run t --json inspect m --view '{"names":["nope"]}' --keep
ok is "$rc" 1
ok is "$(jq_ 'd["error"]["code"]')" "TC_ENOTFOUND"
run t inspect m --view '{"slices":'
ok is "$rc" 2
ok has "$err" "error: TC_EINVAL: --view: view spec: invalid JSON"
run t inspect m --keep
ok is "$rc" 2
ok is "$(t --json keys)" "$keys_before"
run t inspect m
ok is "$rc" 0

echo "test_cli_view: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
