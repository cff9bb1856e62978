#!/bin/bash
# Assemble .gpu/: what a GPU-machine run needs from this machine's build
# (binaries, libtcast, test and bench programs, the Debian libraries they
# link, and pytest, which that machine lacks).  .gpu/ is git-ignored; pass
# it to the device tool's `carry`.
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.gpu"
rm -rf "$out"
mkdir -p "$out"/{bin,lib,tests,bench,libs,py}
cp "$root/$build"/bin/tcast "$out/bin/"
cp -P "$root/$build"/lib/libtcast.so* "$out/lib/"
find "$root/$build/tests" -maxdepth 1 -type f -perm -u+x -name 'test_*' -exec cp {} "$out/tests/" \;
[ -d "$root/$build/fakecuda" ] && cp -r "$root/$build/fakecuda" "$out/"
find "$root/$build/bench" -maxdepth 1 -type f -perm -u+x -name 'bench_*' -exec cp {} "$out/bench/" \;
/work/shared/device/bundle-libs "$out/libs" "$out"/bin/* "$out"/lib/libtcast.so "$out"/tests/* "$out"/bench/* >/dev/null
# Loaded by name, not linked (src/common/dynlib.h): the metrics endpoint's
# and sd_notify's libraries, with what they link.
for l in libmicrohttpd.so.12 libsystemd.so.0; do
	p=$(ldconfig -p | awk -v l="$l" '$1 == l { print $NF; exit }')
	[ -n "$p" ] || continue
	cp -L "$p" "$out/libs/$l"
	/work/shared/device/bundle-libs "$out/libs" "$p" >/dev/null
done
# GPU_BUNDLE_NET=1: Debian's ip, tc and iperf3 with their libraries, for
# the namespace benches (bench/peer_pull.sh, bench/fanout.sh) on a machine
# that lacks them or has other versions; gpu-env.sh puts them first on PATH.
if [ "${GPU_BUNDLE_NET:-0}" = 1 ]; then
	mkdir -p "$out/net/bin"
	for t in ip tc iperf3; do cp "$(command -v $t)" "$out/net/bin/"; done
	/work/shared/device/bundle-libs "$out/libs" "$out"/net/bin/* >/dev/null
fi
for p in pytest _pytest pluggy iniconfig packaging py.py; do
	[ -e "/usr/lib/python3/dist-packages/$p" ] && cp -r "/usr/lib/python3/dist-packages/$p" "$out/py/"
done
du -sh "$out"
