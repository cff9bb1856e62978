#!/bin/sh
# ./make demo | ./make test | ./make <any Makefile target>
#
# The README's two commands, for a fresh Debian 12 machine that has nothing
# but git: no make, no compiler.  Installs make (with every other package
# the build needs) when it is missing, then hands over to the Makefile,
# whose targets install the rest.  Where make exists, `make test` and
# `./make test` are the same command.
set -eu
cd "$(dirname "$0")"
if ! command -v make >/dev/null 2>&1; then
	echo "./make: make is not installed; installing the build packages first" >&2
	sh scripts/install-deps.sh
fi
exec make "$@"
