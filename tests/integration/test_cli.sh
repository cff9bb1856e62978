#!/bin/bash
# The tcast CLI end to end through the real binary: daemon lifecycle,
# every verb, --json output, exit codes (0 ok, 1 runtime, 2 usage).
set -u
T=${TCAST:?}
DATA=${TC_TEST_DATA:?}
dir=$(mktemp -d "${TMPDIR:-/tmp}/tcast-cli-XXXXXX")
sock=$dir/run/d.sock
pass=0 fail=0
t() { "$T" --socket "$sock" "$@"; }
ok() { if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $*" >&2; fi; }
rc_is() { local want=$1; shift; "$@" >/dev/null 2>&1; local got=$?; [ "$got" = "$want" ] || { echo "  exit $got, want $want: $*" >&2; return 1; }; }
json() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
cleanup() { t daemon stop >/dev/null 2>&1; rm -rf "$dir"; }
trap cleanup EXIT

ok rc_is 1 t daemon status
ok rc_is 1 t ls                                   # no daemon: runtime error
ok rc_is 2 t bogus-verb
ok rc_is 2 t import
ok rc_is 1 t daemon start --set bogus_key=1       # strict config
ok rc_is 0 t daemon start --host-memory 64MiB
ok rc_is 1 t daemon start                          # a second start is refused
ok rc_is 0 t daemon status
[ "$(t --json daemon status | json 'd["host_budget_bytes"]')" = 67108864 ]; ok test $? = 0

id=$(t import "$DATA/tiny-llama" --key cli:llama:v1)
ok test "${id:0:4}" = "tc2:"
ok rc_is 0 t verify "$DATA/tiny-llama" "$DATA/dtypes.safetensors"
ok rc_is 1 t verify "$DATA/hostile/st/len_7.safetensors"
t verify "$DATA/hostile/st/len_7.safetensors" 2>&1 | grep -q "TC_EBADFILE"; ok test $? = 0
[ "$(t --json ls | json 'len(d["artifacts"])')" = 1 ]; ok test $? = 0
[ "$(t --json inspect cli:llama:v1 | json 'd["tensors"]')" = 30 ]; ok test $? = 0
t inspect cli:llama:v1 | grep -q "model.embed_tokens.weight"; ok test $? = 0
id2=$(t import "$DATA/dtypes.safetensors")
ok rc_is 1 t keys set cli:llama:v1 "$id2"              # needs CAS
ok rc_is 1 t keys set cli:llama:v1 "$id2" --expect 5   # wrong generation
ok rc_is 0 t keys set cli:llama:v1 "$id2" --expect 1
[ "$(t --json keys cli:llama:v1 | json 'd["generation"]')" = 2 ]; ok test $? = 0
[ "$(t --json keys | json 'len(d["keys"])')" = 1 ]; ok test $? = 0
ok rc_is 0 t export cli:llama:v1 "$dir/out.safetensors"
ok rc_is 0 t verify "$dir/out.safetensors"
[ "$(t --json import "$dir/out.safetensors" | json 'd["deduplicated"]')" = True ]; ok test $? = 0
ok rc_is 1 t import "$DATA/hostile/st/dup_tensor.safetensors"
ok rc_is 1 t import /nonexistent
ok rc_is 1 t import "$DATA/tiny-llama" --policy durable
ok rc_is 0 t rm cli:llama:v1
ok rc_is 1 t inspect cli:llama:v1
ok rc_is 0 t rm "$id"
t daemon logs -n 5 | grep -q "removed"; ok test $? = 0
# A YAML config; flags override it; restart keeps serving on the socket.
printf 'host_memory: 48MiB\nio_threads: 2\nlog_level: debug\n' > "$dir/d.yaml"
printf 'host_memory: 48MiB\nno_such_key: 1\n' > "$dir/bad.yaml"
ok rc_is 0 t daemon restart --config "$dir/d.yaml"
[ "$(t --json daemon status | json 'd["host_budget_bytes"]')" = $((48 << 20)) ]; ok test $? = 0
[ "$(t --json daemon status | json 'd["io_threads"]')" = 2 ]; ok test $? = 0
ok rc_is 0 t daemon restart --config "$dir/d.yaml" --host-memory 40MiB
[ "$(t --json daemon status | json 'd["host_budget_bytes"]')" = $((40 << 20)) ]; ok test $? = 0
ok rc_is 0 t daemon stop
t daemon start --config "$dir/bad.yaml" 2>&1 | grep -q "bad.yaml:2: key 'no_such_key'"; ok test $? = 0
ok rc_is 1 t daemon status
ok rc_is 0 t daemon stop                                # idempotent

# Straight to a GPU, through the fake driver (daemon and CLI both use it).
if [ -e "$TC_BUILD/fakecuda/libcuda.so.1" ]; then
	export TCAST_CUDA_LIB="$TC_BUILD/fakecuda/libcuda.so.1"
	ok rc_is 0 t daemon start --host-memory 64MiB
	gid=$(t import "$DATA/tiny-llama" --device cuda:0)
	ok test "${gid:0:4}" = "tc2:"
	[ "$(t --json inspect "$gid" | json '[r["tier"] for r in d["replicas"]]')" = "['gpu']" ]; ok test $? = 0
	# Export of an artifact held on a GPU only: the daemon makes its host
	# copy from the GPU replica (GPU -> host, the transfer engine), the
	# same bytes an export of a host import writes.
	ok rc_is 0 t export "$gid" "$dir/gpu.safetensors"
	[ "$(t --json inspect "$gid" | json 'sorted(r["tier"] for r in d["replicas"])')" = "['gpu', 'host']" ]; ok test $? = 0
	t daemon logs -n 20 | grep -q "made a host copy of $gid from its replica on GPU 0"; ok test $? = 0
	ok rc_is 0 t rm "$gid"
	ok test "$(t import "$DATA/tiny-llama")" = "$gid"
	ok rc_is 0 t export "$gid" "$dir/host.safetensors"
	ok cmp -s "$dir/gpu.safetensors" "$dir/host.safetensors"
	ok rc_is 0 t rm "$gid"
	ok test "$(t import "$DATA/tiny-llama" --device cuda:0)" = "$gid"
	ok rc_is 1 t import "$DATA/tiny-llama" --device cuda:7
	# The CLI has the daemon resolve cuda:N (their CUDA environments
	# match) and never initialises the driver itself: a cuInit in it
	# would fail here.
	ok rc_is 0 t rm "$gid"
	TC_FAKECUDA_FAIL=cuInit:1 t import "$DATA/tiny-llama" --device cuda:0 >/dev/null; ok test $? = 0
	t daemon logs -n 5 | grep -q "to GPU 0: "; ok test $? = 0
	# Another environment: the daemon says it cannot map the ordinal and
	# the CLI names the GPU by UUID (its cuda:0 is the daemon's GPU 1).
	ok rc_is 0 t daemon stop
	TC_FAKECUDA_DEVICES=2 t daemon start --host-memory 64MiB >/dev/null; ok test $? = 0
	CUDA_VISIBLE_DEVICES=1 t import "$DATA/tiny-llama" --device cuda:0 >/dev/null; ok test $? = 0
	t daemon logs -n 5 | grep -q "to GPU 1: "; ok test $? = 0
	ok rc_is 0 t daemon restart --host-memory 64MiB
	# The log says how the files were read: from the page cache with
	# pread; O_DIRECT reads through io_uring where the kernel allows it.
	[ "$(t --json daemon status | json 'd["io_engine"]')" = auto ]; ok test $? = 0
	t daemon logs -n 20 | grep -Eq "to GPU 0: .* GB/s, read with pread, 0 bytes with O_DIRECT"; ok test $? = 0
	ok rc_is 0 t daemon restart --host-memory 64MiB --set io_engine=pread
	[ "$(t --json daemon status | json 'd["io_engine"]')" = pread ]; ok test $? = 0
	ok rc_is 0 t import "$DATA/dtypes.safetensors" --device cuda:0
	t daemon logs -n 20 | grep -q "to GPU 0: .* read with pread, "; ok test $? = 0
	# io_engine=io_uring reads even page-cached files through io_uring;
	# where this kernel refuses it, the import fails and says so.
	ok rc_is 0 t daemon restart --host-memory 64MiB --set io_engine=io_uring
	if out=$(t import "$DATA/many-tensors.safetensors" --device cuda:0 2>&1); then
		t daemon logs -n 20 | grep -q "to GPU 0: .* read with io_uring, "; ok test $? = 0
	else
		echo "$out" | grep -q "io_uring is not available"; ok test $? = 0
	fi
	ok rc_is 1 t daemon restart --set io_engine=fast
	ok rc_is 0 t daemon stop
	unset TCAST_CUDA_LIB
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
