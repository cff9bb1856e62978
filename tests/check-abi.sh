#!/bin/bash
# Every symbol libtcast.so exports must be declared for ctypes in
# python/tcast/_native.py, and every export must carry the tc_ prefix.
set -u
lib=$1
root=$2
fail=0
syms=$(nm -D --defined-only "$lib" | awk '$2 == "T" {sub(/@.*/, "", $3); print $3}' | sort -u)
for s in $syms; do
	case $s in tc_*) ;; *) echo "abi: unprefixed export $s"; fail=1 ;; esac
	if [ -f "$root/python/tcast/_native.py" ] &&
		! grep -q "\"$s\"" "$root/python/tcast/_native.py"; then
		echo "abi: $s has no ctypes declaration in python/tcast/_native.py"
		fail=1
	fi
done
[ $fail = 0 ] && echo "abi ok: $(echo "$syms" | wc -w) exports"
exit $fail
