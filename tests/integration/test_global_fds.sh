#!/bin/bash
# The global store out of file descriptors: started with a limit of 48
# (prlimit), it is sent 80 connections at once.  accept then fails with
# EMFILE while connections wait in the listen queue; the store turns them
# away with its reserve fd instead of spinning on the listening socket
# (before, its event loop woke at once for ever: a core at 100 %), says
# so in its log, and serves again once the connections are gone.
set -u
T=${TCAST:?}
. "$(dirname "$0")/../lib/cluster.sh"
command -v prlimit >/dev/null || { echo "no prlimit: skipped"; exit 77; }
dir=$(mktemp -d /tmp/tcast-gfds-XXXXXX)
chmod 700 "$dir"
cleanup() {
	g stop >/dev/null 2>&1
	[ "$fail" = 0 ] || tail -n 20 "$dir/gs/global.log" >&2
	rm -rf "$dir"
}
trap cleanup EXIT
new_secret "$dir/secret"

prlimit --nofile=48:48 -- "$T" global start --listen 127.0.0.1:0 \
	--state-dir "$dir/gs" --cluster-secret-file "$dir/secret" >/dev/null
ok test $? = 0
G=$(cat "$dir/gs/global.addr")
pid=$(cat "$dir/gs/global.pid")
ok test -n "$G" -a -n "$pid"

# 80 connections held open for 3 s, the store's CPU time measured over
# the last 2 of them (clock ticks of user + system time).
$PY - "$G" "$pid" >"$dir/cpu" <<'PYEOF'
import os, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
def cpu():
    f = open(f"/proc/{sys.argv[2]}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
conns = [socket.create_connection((host, int(port))) for _ in range(80)]
time.sleep(1)
t0, c0 = time.monotonic(), cpu()
time.sleep(2)
print(round((cpu() - c0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0) * 100))
for s in conns:
    s.close()
PYEOF
echo "  store CPU while out of fds: $(cat "$dir/cpu") %"
ok test "$(cat "$dir/cpu")" -lt 30
ok in_log "$dir/gs/global.log" "turning connections away until fds are free"
# The connections are gone: it serves again.
ok wait_for 10 g status
summary test_global_fds
