# shellcheck shell=bash
# cluster.sh - what the cluster shell tests share (test_cluster,
# test_cluster_keys, test_fanout, test_ha, test_peer, test_peer_gpu,
# test_peer_view, test_tls).  Source it first, after T=${TCAST:?}; every
# function reads $T and $dir (the test's private folder) when it runs, so
# `dir` may be set after sourcing.  It sets PY and the pass/fail counters.
#
#   checks      ok CMD...  (counts; on failure prints the line and CMD)
#               is GOT WANT, has TEXT PART, in_log FILE TEXT (5 s)
#   helpers     mark TEXT (timestamped), json EXPR (on stdin's document `d`),
#               run CMD... ($rc, $out, $err), jq_ EXPR (on run's stdout),
#               wait_for SECONDS CMD..., mk FILE BYTES, new_secret FILE
#   loopback    g VERB ARGS... (the global store in $dir/gs), d NAME ARGS...
#               (tcast for the daemon of $dir/NAME), live N (N nodes live)
#   namespaces  netns_require (exit 77 unless root with iproute2),
#               netns_nodes TAG N (a bridge and N namespaces on it),
#               daemon NAME NETNS ADDR [ENV...], t NAME ARGS..., pid_of NAME,
#               pull_on NAME NETNS ARGS..., daemons_stop, netns_cleanup
#   summary     summary NAME: prints the counts; its status is the verdict
PY=${PY:-/usr/bin/python3}
pass=0 fail=0

# ------------------------------------------------------------ checks

ok() { if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL (line ${BASH_LINENO[0]}): $*" >&2; fi; }
is() { [ "$1" = "$2" ] || { echo "  got '$1', want '$2'" >&2; return 1; }; }
has() { grep -qF -- "$2" <<<"$1" || { echo "  no '$2' in: $1" >&2; return 1; }; }
# in_log FILE TEXT: TEXT shows up in FILE within 5 s (logs are written
# by other processes).
in_log() {
	for _ in $(seq 50); do grep -qF -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
	echo "  no '$2' in $1:" >&2; tail -n 5 "$1" >&2; return 1
}

summary() {
	echo "${1:+$1: }$pass passed, $fail failed"
	[ "$fail" = 0 ]
}

# ------------------------------------------------------------ helpers

mark() { echo "[$(date +%T.%3N)] $*"; }
json() { $PY -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
run() { "$@" >"$dir/o" 2>"$dir/e"; rc=$?; out=$(cat "$dir/o"); err=$(cat "$dir/e"); }
jq_() { $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$dir/o"; }

# wait_for SECONDS CMD...: poll until CMD succeeds (bounded).
wait_for() {
	local t=$1; shift
	for _ in $(seq $((t * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}

# mk FILE BYTES: a safetensors file of one random U8 tensor.
mk() {
	$PY - "$1" "$2" <<'PYEOF'
import json, os, struct, sys
n = int(sys.argv[2])
h = json.dumps({"x": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + os.urandom(n))
PYEOF
}

# new_secret FILE: a fresh cluster secret, mode 0600.
new_secret() { (umask 077; head -c 48 /dev/urandom | base64 -w0 >"$1"); }

# ------------------------------------------------------------ loopback

# g VERB ARGS...: `tcast global VERB` on the store of $dir/gs, secret
# $dir/secret (a test with more flags redefines g).
g() { "$T" global "$1" --state-dir "$dir/gs" --cluster-secret-file "$dir/secret" "${@:2}"; }
# d NAME ARGS...: tcast talking to the daemon whose folder is $dir/NAME.
d() { local n=$1; shift; "$T" --socket "$dir/$n/d.sock" "$@"; }
# live N: the global store counts N live nodes.
live() { test "$(g status --json | json 'd["nodes_live"]')" = "$1"; }

# ------------------------------------------------------------ namespaces

netns_require() {
	if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
		echo "SKIP: needs root and iproute2 for network namespaces (ip netns)"
		exit 77
	fi
	. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/netns-lib.sh"
}

# netns_nodes TAG N: a bridge tcTAGbrPID and N namespaces tcTAG{a,b,c...}PID
# on it, the i-th (from 0) at $sub.(11 + i)/24 on veth vTAGi-PID.  Sets
# id, sub, br and ns; exits 77 when no bridge can be made.  The subnet
# comes from the PID, so tests running at once do not share one.
netns_nodes() {
	local tag=$1 n=$2 i letters=abcdefgh
	id=$$
	sub="10.$((200 + id % 50)).$(((id / 50) % 250))"
	br="tc${tag}br$((id % 100000))"
	ns=()
	for ((i = 0; i < n; i++)); do ns+=("tc$tag${letters:i:1}$id"); done
	ip link add "$br" type bridge && ip link set "$br" up || { echo "SKIP: cannot make a bridge"; exit 77; }
	for ((i = 0; i < n; i++)); do
		netns_join "${ns[$i]}" "$br" "$tag$i-$id" "$sub.$((11 + i))"
	done
}

# daemon NAME NETNS ADDR [ENV...]: a daemon in NETNS with its peer server
# on ADDR, folder $dir/NAME (its `daemon start --json` in start.json),
# secret $dir/secret; it is stopped by daemons_stop.
socks=()
daemon() {
	local name=$1 n=$2 addr=$3
	shift 3
	mkdir -p -m 700 "$dir/$name"
	socks+=("$dir/$name/d.sock")
	env "$@" ip netns exec "$n" "$T" --socket "$dir/$name/d.sock" --json daemon start \
		--host-memory 1GiB --set peer_listen="$addr" \
		--set cluster_secret_file="$dir/secret" --set peer_timeout_ms=1500 \
		>"$dir/$name/start.json" || { echo "cannot start daemon $name" >&2; cat "$dir/$name"/*.log >&2; return 1; }
}
t() { local name=$1; shift; "$T" --socket "$dir/$name/d.sock" "$@"; }
# pid_of NAME: the pid of the daemon `daemon NAME ...` started
pid_of() { $PY -c "import json; print(json.load(open('$dir/$1/start.json'))['pid'])"; }
# pull_on NAME NETNS ARGS...: tcast pull run inside NETNS into daemon NAME
pull_on() { local name=$1 n=$2; shift 2; ip netns exec "$n" "$T" --socket "$dir/$name/d.sock" --json pull "$@"; }
# daemons_stop [SECONDS]: stop every daemon `daemon` started.
daemons_stop() {
	for s in "${socks[@]}"; do "$T" --socket "$s" daemon stop --timeout "${1:-5}" >/dev/null 2>&1; done
	socks=()
}
netns_cleanup() {
	for n in "${ns[@]}"; do ip netns del "$n" 2>/dev/null; done
	ip link del "$br" 2>/dev/null
}
