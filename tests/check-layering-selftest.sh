#!/bin/bash
# Proves tests/check-layering.sh can fail: small source trees with one
# violation each (a layer including an upper one, a cycle of two files and
# of three files in one folder) must be refused with the offending files
# named, and a clean tree passed.
set -u
check=$(cd "$(dirname "$0")" && pwd)/check-layering.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# tree NAME FILE=INCLUDES... : src/FILE containing one #include per name.
tree() {
	local t=$tmp/$1
	shift
	mkdir -p "$t/src"
	for spec in "$@"; do
		local f=${spec%%=*} incs=${spec#*=}
		mkdir -p "$t/src/$(dirname "$f")"
		: >"$t/src/$f"
		for i in ${incs//,/ }; do
			echo "#include \"$i\"" >>"$t/src/$f"
		done
	done
	echo "$t"
}
# expect WANT_RC PATTERN TREE
expect() {
	local out rc
	out=$(bash "$check" "$3" 2>&1)
	rc=$?
	if [ "$rc" != "$1" ] || ! grep -q -- "$2" <<<"$out"; then
		echo "FAIL: $3: rc $rc (want $1), output:"
		echo "$out"
		fail=1
	fi
}

ok=$(tree ok common/a.h= common/a.c=a.h xfer/x.h=common/a.h \
	xfer/x.c=x.h store/s.c=xfer/x.h,common/a.h store/s.h=)
expect 0 'layering ok' "$ok"

up=$(tree up common/a.h= xfer/x.c=store/s.h store/s.h=)
expect 1 'src/xfer/x.c includes "store/s.h"' "$up"

two=$(tree two store/obj.h= store/obj.c=obj.h,tier.h store/tier.h= \
	store/tier.c=tier.h,obj.h)
expect 1 'include cycle in src/store: .*obj' "$two"

three=$(tree three gpu/a.h=b.h gpu/b.h= gpu/b.c=c.h gpu/c.h= gpu/c.c=a.h)
expect 1 'include cycle in src/gpu' "$three"

# A header and its own .c are one module, not a cycle.
self=$(tree self net/ev.h= net/ev.c=ev.h)
expect 0 'layering ok' "$self"

# x_internal.h is x's: x.c including it, it including x.h, and a sibling
# file including it are no cycle; x including that sibling's header is.
intl=$(tree intl store/t.h= store/t_internal.h=t.h store/t.c=t_internal.h \
	store/t_src.c=t_internal.h)
expect 0 'layering ok' "$intl"
intlcyc=$(tree intlcyc store/t.h= store/t_internal.h=t.h,t_src.h \
	store/t.c=t_internal.h store/t_src.h= store/t_src.c=t_internal.h)
expect 1 'include cycle in src/store: .*t' "$intlcyc"

[ $fail = 0 ] && echo "layering self-test ok"
exit $fail
