#!/bin/bash
# Optional TLS on every cluster connection (docs/peer.md, "TLS"): a
# throwaway CA and certificates made here with the openssl CLI; a global
# store and two daemons on loopback TCP, all with tls_cert/tls_key/tls_ca.
#   put on A, pull on B (by key through the global store, and --from A's
#     peer server): same id, same bytes; C pulls from A and B at once;
#     policy ha replicates A -> B;
#   refused, with the reason in the refuser's log: a daemon without TLS
#     and one whose certificate another CA signed, by the global store and
#     by a peer server; plaintext garbage to either TLS port; a silent
#     client does not slow anybody (its handshake deadline drops it);
#   bad files at start: a clear error naming the file, exit status != 0;
#   the name check: a client refuses a server whose certificate does not
#     name the host or IP it dialled (subjectAltName), with the expected
#     name and what the certificate holds; the right name connects;
#     tls_verify_name off admits it; the refused server keeps serving.
set -u
T=${TCAST:?}
command -v openssl >/dev/null || { echo "SKIP: no openssl CLI"; exit 77; }
. "$(dirname "$0")/../lib/cluster.sh"
dir=$(mktemp -d /tmp/tcast-tls-XXXXXX)
chmod 700 "$dir"
C=$dir/pki
TLS=(--tls-cert "$C/global.crt" --tls-key "$C/global.key" --tls-ca "$C/ca.crt")
S=(--state-dir "$dir/gs" --cluster-secret-file "$dir/secret")
# the global store, with TLS
g() { "$T" global "$1" "${S[@]}" "${TLS[@]}" "${@:2}"; }
cleanup() {
	for n in a b c x y w; do d $n daemon stop >/dev/null 2>&1; done
	"$T" global stop "${S[@]}" >/dev/null 2>&1
	if [ "$fail" != 0 ]; then
		tail -n 20 "$dir/gs/global.log" >&2
		for n in a b c x y w; do echo "--- $n" >&2; tail -n 10 "$dir/$n/tcastd.log" 2>/dev/null >&2; done
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

# --- a throwaway PKI: the cluster CA, one certificate per process, and a
# rogue CA with a certificate of its own.
mkdir -p "$C" && chmod 700 "$C"
ca() { # NAME: a self-signed CA
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$C/$1.key" -out "$C/$1.crt" -days 2 -subj "/CN=$1" 2>/dev/null
}
leaf() { # NAME CA: a certificate for NAME signed by CA (client and server use)
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$C/$1.key" -out "$C/$1.csr" -subj "/CN=$1" 2>/dev/null &&
	printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:%s,IP:127.0.0.1\n' "$1" >"$C/$1.ext" &&
	openssl x509 -req -in "$C/$1.csr" -CA "$C/$2.crt" -CAkey "$C/$2.key" \
		-CAcreateserial -days 1 -extfile "$C/$1.ext" -out "$C/$1.crt" 2>/dev/null
}
ca ca && ca rogue-ca
for n in global node-a node-b node-x; do leaf "$n" ca; done
leaf node-y rogue-ca
# node-w: a certificate of the cluster CA for the name localhost and an
# address it is not at (10.9.9.9), so 127.0.0.1 is the wrong address.
leaf node-w ca
sed -i 's/^subjectAltName=.*/subjectAltName=DNS:localhost,IP:10.9.9.9/' "$C/node-w.ext"
openssl x509 -req -in "$C/node-w.csr" -CA "$C/ca.crt" -CAkey "$C/ca.key" \
	-CAcreateserial -days 1 -extfile "$C/node-w.ext" -out "$C/node-w.crt" 2>/dev/null
# node-y trusts both CAs (so its own certificate checks out at start, and
# what it meets is refused at the other end, not at its own).
cat "$C/ca.crt" "$C/rogue-ca.crt" >"$C/both.crt"
chmod 600 "$C"/*.key
ok test -s "$C/node-y.crt"
new_secret "$dir/secret"

# --- bad files at start: named, with what is wrong, exit != 0
bad() { # EXPECTED-TEXT FLAGS...: global run refuses to start
	local out
	out=$("$T" global run --listen 127.0.0.1:0 --state-dir "$dir/bad" \
		--cluster-secret-file "$dir/secret" "$@" 2>&1)
	local rc=$?
	[ $rc != 0 ] || { echo "  started with $*" >&2; return 1; }
	has "$out" "$1"
}
ok bad "tls_cert '$C/nope.crt': cannot open: No such file or directory" \
	--tls-cert "$C/nope.crt" --tls-key "$C/global.key" --tls-ca "$C/ca.crt"
ok bad "tls_cert '$C/global.csr': not a PEM certificate" \
	--tls-cert "$C/global.csr" --tls-key "$C/global.key" --tls-ca "$C/ca.crt"
ok bad "tls_key '$C/node-a.key' is not the key of tls_cert '$C/global.crt'" \
	--tls-cert "$C/global.crt" --tls-key "$C/node-a.key" --tls-ca "$C/ca.crt"
cp "$dir/secret" "$C/secret-copy"
ok bad "tls_ca '$C/secret-copy': not a PEM CA certificate" \
	--tls-cert "$C/global.crt" --tls-key "$C/global.key" --tls-ca "$C/secret-copy"
ok bad "tls_cert '$C/node-y.crt' does not verify against tls_ca '$C/ca.crt'" \
	--tls-cert "$C/node-y.crt" --tls-key "$C/node-y.key" --tls-ca "$C/ca.crt"
ok bad "TLS needs all three of tls_cert, tls_key and tls_ca (tls_ca missing)" \
	--tls-cert "$C/global.crt" --tls-key "$C/global.key"
ok bad "key 'tls': 'maybe': expected on, off or auto" --tls maybe
cp "$C/global.key" "$C/open.key" && chmod 644 "$C/open.key"
ok bad "tls_key '$C/open.key' has mode 0644: anyone may read the private key" \
	--tls-cert "$C/global.crt" --tls-key "$C/open.key" --tls-ca "$C/ca.crt"

# --- the cluster, TLS everywhere
out=$(g start --listen 127.0.0.1:0 --lease-ms 1500 --set handshake_ms=1000)
ok test $? = 0
G=$(cat "$dir/gs/global.addr")
ok test -n "$G"
ok in_log "$dir/gs/global.log" "TLS on as CN = global"

# daemon NAME CERT CA [--set K=V ...]: a daemon of the cluster
daemon() {
	local n=$1 cert=$2 cafile=$3 sets=()
	shift 3
	for a in "$@"; do sets+=(--set "$a"); done
	mkdir -p "$dir/$n" && chmod 700 "$dir/$n"
	d "$n" daemon start --host-memory 256MiB --set "global=$G" \
		--set "cluster_secret_file=$dir/secret" --set "node_name=$n" \
		--set "peer_listen=127.0.0.1:0" --set "log_file=$dir/$n/tcastd.log" \
		${cert:+--set "tls_cert=$C/$cert.crt" --set "tls_key=$C/$cert.key" --set "tls_ca=$C/$cafile.crt"} \
		"${sets[@]}" >/dev/null
}
mkdir -p "$dir/shared"
daemon a node-a ca "shared_disk=$dir/shared" "ha_wait_ms=5000"
ok test $? = 0
daemon b node-b ca
ok test $? = 0
ok wait_for 10 live 2
ok is "$(g status --json | json 'd["tls"]')" True
ok in_log "$dir/a/tcastd.log" "peer server listening on"
ok in_log "$dir/a/tcastd.log" ", TLS)"

# A bad file in a daemon's config: it does not start, and says which.
mkdir -p "$dir/z" && chmod 700 "$dir/z"
out=$(d z daemon start --set "global=$G" --set "cluster_secret_file=$dir/secret" \
	--set "peer_listen=127.0.0.1:0" --set "tls_cert=$C/node-a.crt" \
	--set "tls_key=$C/node-a.key" --set "tls_ca=$C/missing-ca.crt" 2>&1)
ok test $? != 0
ok has "$out" "tls_ca '$C/missing-ca.crt': cannot open: No such file or directory"

# 1. put on A, pull on B by key (sources from the global store): same
# id, same bytes.
mk "$dir/f1.safetensors" 6000000
id=$(d a import "$dir/f1.safetensors" --key model:tls 2>/dev/null)
ok test -n "$id"
r=$(d b --json pull model:tls 2>"$dir/err")
ok test $? = 0
ok is "$(echo "$r" | json 'd["id"]')" "$id"
d a export "$id" "$dir/a.st" && d b export model:tls "$dir/b.st"
ok cmp -s "$dir/a.st" "$dir/b.st"
PA=$(cat "$dir/a/peer.addr")
ok test -n "$PA"
# --from A's peer server, more streams: the TLS settings come from B's
# daemon config.
r=$(d b --json pull "$id" --from "$PA" --streams 3 --no-key 2>"$dir/err")
ok test $? = 0
ok is "$(echo "$r" | json 'd["id"]')" "$id"

# 2. policy ha: A asks B (REPLICATE_REQ over TLS), B pulls from A.
mk "$dir/f2.safetensors" 3000000
r=$(d a --json import "$dir/f2.safetensors" --policy ha 2>"$dir/err")
ok is "$(echo "$r" | json 'd["degraded"]')" ""
id2=$(echo "$r" | json 'd["id"]')
ok is "$(d b --json inspect "$id2" | json 'd["id"]')" "$id2"

# 2b. fan-out: C pulls the key from A and B at once (both hold it now),
# every source over TLS, none failing.
daemon c node-x ca
ok test $? = 0
ok wait_for 10 live 3
r=$(d c --json pull model:tls 2>"$dir/err")
ok test $? = 0
ok is "$(echo "$r" | json 'd["id"]')" "$id"
ok is "$(echo "$r" | json 'sorted(len(s["addr"]) > 0 and not s["failed"] for s in d["sources"])')" "[True, True]"
d c export model:tls "$dir/c.st"
ok cmp -s "$dir/a.st" "$dir/c.st"
d c daemon stop >/dev/null
ok wait_for 10 live 2

# 3. refused by the global store, the reason in its log: a daemon without
# TLS, then one whose certificate another CA signed.
daemon x "" ""
ok in_log "$dir/gs/global.log" "does not speak TLS (plaintext, or TLS off at its end)"
ok in_log "$dir/x/tcastd.log" "TLS on at its end only?"
ok live 2 # it did not join
# (it would go on retrying, and the global store's refusals are
# rate-limited to a line a second: y wants its own line)
d x daemon stop >/dev/null
sleep 1.2
daemon y node-y both
ok in_log "$dir/gs/global.log" "TLS: the peer's certificate (CN = node-y) is refused"
ok in_log "$dir/y/tcastd.log" "the peer refused our certificate"
ok live 2
d y daemon stop >/dev/null

# 4. refused by A's peer server: a pull without TLS, and one with the
# rogue certificate.
out=$(d b --json pull "$id" --from "$PA" --no-key --tls off 2>&1)
ok test $? != 0
ok in_log "$dir/a/tcastd.log" "does not speak TLS"
out=$(d b --json pull "$id" --from "$PA" --no-key --tls-cert "$C/node-y.crt" \
	--tls-key "$C/node-y.key" --tls-ca "$C/both.crt" 2>&1)
ok test $? != 0
ok has "$out" "the peer refused our certificate"
ok in_log "$dir/a/tcastd.log" "TLS: the peer's certificate (CN = node-y) is refused"

# 5. plaintext garbage to the TLS ports: refused and logged; a silent
# client holds no one up (status answers at once, and the silent one is
# dropped at its handshake deadline).
garbage() { # HOST:PORT
	exec 3<>"/dev/tcp/${1%:*}/${1##*:}" && printf 'GET / HTTP/1.0\r\n\r\n' >&3 2>/dev/null
	timeout 3 cat <&3 >/dev/null 2>&1
	exec 3>&-
}
sleep 1.2
garbage "$G"
ok in_log "$dir/gs/global.log" "http request"
garbage "$PA"
ok in_log "$dir/a/tcastd.log" "http request"
sleep 1.2 # (the refusal line above holds the log's rate limit a second)
exec 4<>"/dev/tcp/${G%:*}/${G##*:}"
t0=$(date +%s%N)
ok live 2
ok test $((($(date +%s%N) - t0) / 1000000)) -lt 2000
ok in_log "$dir/gs/global.log" "not finished within its deadline"
exec 4>&-

# 6. still serving after all that
r=$(d b --json pull model:tls --no-key 2>"$dir/err")
ok test $? = 0
ok is "$(echo "$r" | json 'd["id"]')" "$id"

# 7. the name check.  The global store's certificate names 127.0.0.1 and
# "global", not localhost: a tool dialling localhost refuses it, naming
# both; then W (a peer server whose certificate names localhost and
# 10.9.9.9 only) serves a pull by the name it holds, refuses one by an
# address it does not hold, admits it with tls_verify_name off, and goes
# on serving.
gport=${G##*:}
out=$(g status --global "localhost:$gport" 2>&1)
ok test $? != 0
ok has "$out" "TLS: the peer's certificate (CN = global) does not name the host 'localhost' that we connected to: it holds DNS:global, IP:127.0.0.1"
out=$(g status --global "localhost:$gport" --tls-verify-name off --json 2>&1)
ok has "$out" '"nodes_live":2'
mkdir -p "$dir/w" && chmod 700 "$dir/w"
d w daemon start --host-memory 64MiB --set "cluster_secret_file=$dir/secret" \
	--set "node_name=w" --set "peer_listen=127.0.0.1:0" \
	--set "log_file=$dir/w/tcastd.log" --set "tls_cert=$C/node-w.crt" \
	--set "tls_key=$C/node-w.key" --set "tls_ca=$C/ca.crt" >/dev/null
ok test $? = 0
ok wait_for 10 test -s "$dir/w/peer.addr"
PW=$(cat "$dir/w/peer.addr")
idw=$(d w import "$dir/f2.safetensors" 2>/dev/null)
ok test -n "$idw"
d b rm "$idw" >/dev/null 2>&1
out=$(d b --json pull "$idw" --from "$PW" --no-key 2>&1)
ok test $? != 0
ok has "$out" "TLS: the peer's certificate (CN = node-w) does not name the address '127.0.0.1' that we connected to: it holds DNS:localhost, IP:10.9.9.9"
ok has "$out" "tls_verify_name: off"
ok in_log "$dir/w/tcastd.log" "the peer refused our certificate"
r=$(d b --json pull "$idw" --from "localhost:${PW##*:}" --no-key 2>"$dir/err")
ok test $? = 0
ok is "$(echo "$r" | json 'd["id"]')" "$idw"
d b rm "$idw" >/dev/null 2>&1
r=$(d b --json pull "$idw" --from "$PW" --no-key --tls-verify-name off 2>"$dir/err")
ok test $? = 0
ok is "$(echo "$r" | json 'd["id"]')" "$idw"
out=$(d b pull "$idw" --from "$PW" --tls-verify-name perhaps 2>&1)
ok test $? = 2
ok has "$out" "--tls-verify-name: 'perhaps': expected on or off"
d w daemon stop >/dev/null

# 8. a global store listening on every address (0.0.0.0), whose certificate
# names neither 0.0.0.0 nor 127.0.0.1 (node-w's): local verbs reach it over
# loopback through the address it recorded, checking the chain, not the
# name; the same address given by hand is checked and refused.
S2=(--state-dir "$dir/gs2" --cluster-secret-file "$dir/secret")
W=(--tls-cert "$C/node-w.crt" --tls-key "$C/node-w.key" --tls-ca "$C/ca.crt")
"$T" global start "${S2[@]}" "${W[@]}" --listen 0.0.0.0:0 >/dev/null
ok test $? = 0
G2=$(cat "$dir/gs2/global.addr")
ok has "$G2" "0.0.0.0:"
out=$("$T" --json global status "${S2[@]}" "${W[@]}" 2>&1)
ok test $? = 0
ok has "$out" '"nodes"'
out=$("$T" global status "${S2[@]}" "${W[@]}" --global "127.0.0.1:${G2##*:}" 2>&1)
ok test $? != 0
ok has "$out" "does not name the address '127.0.0.1'"
# A rogue CA's certificate is refused all the same over loopback.
out=$("$T" global status "${S2[@]}" --tls-cert "$C/node-y.crt" --tls-key "$C/node-y.key" --tls-ca "$C/both.crt" 2>&1)
ok test $? != 0
"$T" global stop "${S2[@]}" >/dev/null 2>&1

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
