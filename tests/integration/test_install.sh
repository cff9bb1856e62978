#!/bin/bash
# `make install` through CMake's install rules into a DESTDIR: the file list,
# the soname links, tcast.pc through pkg-config, a C program built only from
# the installed headers and library that talks to a daemon started by the
# installed CLI, and the systemd units (Type=notify, the installed path).
set -u
B=${TC_BUILD:?}
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$B/CMakeCache.txt")
libdir=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:PATH=//p' "$B/CMakeCache.txt")
dir=$(mktemp -d /tmp/tcast-install-XXXXXX)
dest=$dir/dest
root=$dest$prefix
pass=0 fail=0
ok() { if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $*" >&2; fi; }
cleanup() {
	[ -x "$root/bin/tcast" ] && "$root/bin/tcast" --socket "$dir/run/d.sock" daemon stop >/dev/null 2>&1
	rm -rf "$dir"
}
trap cleanup EXIT

DESTDIR=$dest cmake --install "$B" >"$dir/install.log" 2>&1
ok test $? = 0
# Exactly these files (and links), nothing else.
(cd "$dest" && find . -type f -o -type l | sed 's|^\./||' | sort) >"$dir/got"
{
	echo "${prefix#/}/bin/tcast"
	for h in "$(dirname "$0")"/../../include/tcast/*.h; do
		echo "${prefix#/}/include/tcast/$(basename "$h")"
	done
	echo "${prefix#/}/$libdir/libtcast.so"
	echo "${prefix#/}/$libdir/libtcast.so.0"
	echo "${prefix#/}/$libdir/libtcast.so.0.1.0"
	echo "${prefix#/}/$libdir/pkgconfig/tcast.pc"
	echo "${prefix#/}/lib/systemd/system/tcast.service"
	echo "${prefix#/}/lib/systemd/user/tcast.service"
	echo "${prefix#/}/share/man/man1/tcast.1"
	echo "${prefix#/}/share/man/man8/tcast-daemon.8"
} | sort >"$dir/want"
diff "$dir/want" "$dir/got" >&2
ok test $? = 0
lib=$root/$libdir
ok test "$(readlink "$lib/libtcast.so")" = libtcast.so.0
ok test "$(readlink "$lib/libtcast.so.0")" = libtcast.so.0.1.0
readelf -d "$lib/libtcast.so.0.1.0" | grep -q 'SONAME.*\[libtcast.so.0\]'
ok test $? = 0
"$root/bin/tcast" --version | grep -q '^tcast 0\.1\.0$'
ok test $? = 0
man -l "$root/share/man/man1/tcast.1" >/dev/null 2>&1 || true

# pkg-config sees the DESTDIR through its sysroot, as a packager's would.
export PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
flags=$(pkg-config --cflags --libs tcast)
ok test $? = 0
echo "$flags" | grep -q -- "-I$root/include" && echo "$flags" | grep -q -- "-L$lib -ltcast"
ok test $? = 0
ok test "$(pkg-config --modversion tcast)" = 0.1.0

cat >"$dir/hello.c" <<'C'
#include <stdio.h>
#include <tcast/tcast.h>

int main(int argc, char **argv)
{
	tc_client *c;
	char err[256];
	int rc = tc_client_connect(argv[1], &c, err, sizeof(err));

	if (rc < 0) {
		fprintf(stderr, "connect: %s: %s\n", tc_strerror(rc), err);
		return 1;
	}
	printf("%s pid %d\n", tc_version(), (int)tc_client_daemon_pid(c));
	tc_client_close(c);
	return argc == 2 ? 0 : 1;
}
C
# No -I into the source tree: only what was installed.
# A sanitized libtcast needs its runtime first in the program that loads it.
san=""
[ -n "${TC_SANITIZED:-}" ] && san="-fsanitize=address,undefined"
gcc -std=c11 -Wall -Werror $san -o "$dir/hello" "$dir/hello.c" $flags
ok test $? = 0
"$root/bin/tcast" --socket "$dir/run/d.sock" daemon start --host-memory 32MiB >/dev/null
ok test $? = 0
pid=$("$root/bin/tcast" --socket "$dir/run/d.sock" --json daemon status | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
out=$(LD_LIBRARY_PATH=$lib "$dir/hello" "$dir/run/d.sock")
ok test "$out" = "0.1.0 pid $pid"
# It is the installed library that ran, not the build's.
LD_LIBRARY_PATH=$lib ldd "$dir/hello" | grep -q "libtcast.so.0 => $lib/libtcast.so.0"
ok test $? = 0

for u in system user; do
	f=$root/lib/systemd/$u/tcast.service
	grep -qx 'Type=notify' "$f"
	ok test $? = 0
	grep -q "^ExecStart=$prefix/bin/tcast .*daemon run" "$f"
	ok test $? = 0
done
if command -v systemd-analyze >/dev/null 2>&1; then
	# verify wants the binary at its real path: check syntax only.
	systemd-analyze verify --man=no "$root/lib/systemd/system/tcast.service" 2>&1 |
		grep -v 'is not executable\|No such file\|Command .* is not' >&2
fi

echo "test_install: $pass passed, $fail failed"
[ "$fail" = 0 ]
