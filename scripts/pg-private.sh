#!/usr/bin/env bash
# Makes a private copy of this machine's PostgreSQL 15 installation in DIR
# and installs enrich, built from this tree, into it (not into the
# system's).  PostgreSQL finds its share and lib directories relative to
# its own binary, so a cluster started from DIR's bin loads DIR's enrich.
# Used for a sanitizer build next to the normal one, and by anyone who
# wants to test a second build without touching the installed one.
#
#   bash scripts/pg-private.sh DIR [make variables...]
#   e.g. bash scripts/pg-private.sh /tmp/pg-asan COPT='-fsanitize=address'
#
# Prints the bin directory to put first in PATH.  The build happens in a
# copy of the tree (DIR/src), so the tree itself is left as it is.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DIR=${1:?usage: pg-private.sh DIR [make variables...]}
shift
DIR=$(mkdir -p "$DIR" && cd "$DIR" && pwd)

bindir=$(pg_config --bindir)
libdir=$(pg_config --pkglibdir)
sharedir=$(pg_config --sharedir)

rm -rf "$DIR/root" "$DIR/src"
mkdir -p "$DIR/root$(dirname "$bindir")" "$DIR/root$(dirname "$sharedir")"
cp -a "$bindir" "$DIR/root$bindir"
[ -d "$DIR/root$libdir" ] || cp -a "$libdir" "$DIR/root$libdir"
cp -a "$sharedir" "$DIR/root$sharedir"

# build in a copy of the tree (tracked and untracked files, not build output)
mkdir -p "$DIR/src"
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$DIR/src")
make -C "$DIR/src" -s "$@" >/dev/null
make -C "$DIR/src" -s install DESTDIR="$DIR/root" "$@" >/dev/null
chmod -R a+rX "$DIR"

echo "$DIR/root$bindir"
