#!/bin/bash
# Checks the #include graph against docs/design.md's layering rules:
# lower layers never include upper ones, store/global/peer never include
# each other, client never includes store, only src/gpu knows CUDA, and no
# two files of one folder include each other, directly or through others
# (x.c, x.h and x_internal.h -- what the files split out of x share --
# count as one module, so x_parts.c including x_internal.h is an edge to
# x like any other; a cycle means neither can be read, tested or replaced
# without the other).
set -u
root=${1:-.}
cd "$root/src" || exit 2
fail=0
allowed() { # module -> modules it may include
	case $1 in
	common) echo "common" ;;
	net | proto | format | gpu) echo "common $1" ;;
	xfer) echo "common net format gpu xfer" ;;
	client) echo "common net proto format gpu client" ;;
	store) echo "common net proto format gpu xfer store" ;;
	global) echo "common net proto global" ;;
	peer) echo "common net proto format gpu xfer peer" ;;
	cli) echo "common net proto format gpu xfer client store global peer cli" ;;
	esac
}
edges=$(mktemp)
trap 'rm -f "$edges"' EXIT
for f in $(find . -name '*.[ch]' | sed 's|^\./||' | sort); do
	mod=${f%%/*}
	ok=$(allowed "$mod")
	base=$(basename "$f")
	base=${base%.*}
	base=${base%_internal}
	while read -r inc; do
		dep=${inc%%/*}
		if [ "$dep" = "$inc" ] || [ "$dep" = "$mod" ]; then
			# Same folder: an edge between modules (x.c, x.h) for
			# the cycle check; .def files are tables, not modules.
			h=${inc#"$mod"/}
			case $h in *.h) ;; *) continue ;; esac
			[ -e "$mod/$h" ] || continue
			h=${h%.h}
			h=${h%_internal}
			[ "$h" = "$base" ] ||
				echo "$mod $base $h" >>"$edges"
			continue
		fi
		case " $ok " in *" $dep "*) ;; *)
			echo "layering: src/$f includes \"$inc\" ($mod may use: $ok)"
			fail=1
			;;
		esac
	done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f" | grep -v '^tcast/')
	if [ "$mod" != gpu ] && grep -q 'cuda\.h\|CUdeviceptr\|CUresult' "$f"; then
		echo "layering: src/$f uses CUDA types outside src/gpu"
		fail=1
	fi
done
# tsort names the modules of each cycle it finds.
for mod in $(cut -d' ' -f1 "$edges" | sort -u); do
	cyc=$(awk -v m="$mod" '$1 == m { print $2, $3 }' "$edges" |
		tsort 2>&1 >/dev/null | sed -n 's/^tsort: \([^-][^ ]*\)$/\1/p')
	if [ -n "$cyc" ]; then
		echo "layering: include cycle in src/$mod:" $cyc
		fail=1
	fi
done
[ $fail = 0 ] && echo "layering ok"
exit $fail
