#!/bin/bash
# Checks the #include graph against docs/design.md's layering rules:
# lower layers never include upper ones, store/global/peer never include each
# other, client never includes store, and only src/gpu knows CUDA.
set -u
root=${1:-.}
cd "$root/src" || exit 2
fail=0
allowed() { # module -> modules it may include
	case $1 in
	common) echo "common" ;;
	net | proto | format | gpu) echo "common $1" ;;
	client) echo "common net proto format gpu client" ;;
	store) echo "common net proto format gpu store" ;;
	global) echo "common net proto global" ;;
	peer) echo "common net proto format gpu peer" ;;
	cli) echo "common net proto format gpu client store global peer cli" ;;
	esac
}
for f in $(find . -name '*.[ch]' | sed 's|^\./||'); do
	mod=${f%%/*}
	ok=$(allowed "$mod")
	while read -r inc; do
		dep=${inc%%/*}
		[ "$dep" = "$inc" ] && continue # same-directory include
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
[ $fail = 0 ] && echo "layering ok"
exit $fail
