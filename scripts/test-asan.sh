#!/usr/bin/env bash
# Runs the pg_regress and TAP suites once against enrich built with
# AddressSanitizer and UndefinedBehaviorSanitizer (gcc's), in a private copy
# of PostgreSQL (scripts/pg-private.sh), and fails on any sanitizer report
# that involves enrich.
#
#   bash scripts/test-asan.sh                     pg_regress and every TAP file
#   bash scripts/test-asan.sh test/t/005_*.pl     only these TAP files
#
# The server itself is not instrumented.  In the private copy its binary is
# moved aside and replaced by a wrapper that preloads the ASan runtime and
# sets the sanitizer options, so that every postmaster (started by
# scripts/lib.sh, by PostgreSQL::Test::Cluster or by initdb) and all its
# children run with it, and nothing else does (psql, perl, node).  Leak
# detection is off: a backend leaves its memory to exit by design.  Reports
# go to files in $ENRICH_ASAN_DIR/logs (default /tmp/enrich-asan/logs),
# which are read at the end.
#
# What ASan sees: memory from malloc (libcurl's handles and buffers, the
# response body), and the stack and globals of enrich.so.  It does not see
# overruns within palloc'd chunks, which PostgreSQL carves out of larger
# blocks; the parsing code that works in those is fuzzed (test/fuzz).
#
# Internally, scripts/test.sh calls "test-asan.sh --wrap BINDIR" right after
# it has installed the sanitized build (ENRICH_ASAN_LOGS is set).
set -uo pipefail
. "$(dirname "$0")/lib.sh"

# Builds BINDIR/asan-swift-stub.so.  A preloaded ASan runtime starts on the
# first malloc, which in the server is in libp11-kit's constructor, inside
# newlocale() with glibc's locale lock held; the runtime then looks up
# swift_demangle, and the failed dlsym formats its error with dcgettext,
# which waits for that lock forever.  With the symbol present (a demangler
# that never demangles) the lookup succeeds and nothing waits.
build_swift_stub() {
  printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'char *swift_demangle(const char *n, size_t l, char *o, size_t *ol, uint32_t f);' \
    'char *swift_demangle(const char *n, size_t l, char *o, size_t *ol, uint32_t f) { return NULL; }' |
    gcc -shared -fPIC -x c -o "$1/asan-swift-stub.so" -
}

# Moves BINDIR/postgres aside and puts the preloading wrapper in its place.
wrap_postgres() {
  local bin=$1 runtime symbolizer
  runtime=$(readlink -f "$(gcc -print-file-name=libasan.so)")
  [ -f "$runtime" ] || { echo "asan: gcc's libasan is not installed" >&2; return 1; }
  symbolizer=$(command -v llvm-symbolizer || command -v llvm-symbolizer-14 || true)
  : "${ENRICH_ASAN_LOGS:?is set by test-asan.sh}"
  build_swift_stub "$bin" || return 1
  [ -e "$bin/postgres.real" ] || mv "$bin/postgres" "$bin/postgres.real"
  cat >"$bin/postgres" <<WRAPPER
#!/bin/sh
# Written by scripts/test-asan.sh: the server with the ASan runtime preloaded.
LD_PRELOAD=$runtime:$bin/asan-swift-stub.so\${LD_PRELOAD:+:\$LD_PRELOAD}
ASAN_OPTIONS=detect_leaks=0:log_path=$ENRICH_ASAN_LOGS/asan:quarantine_size_mb=16:malloc_context_size=20:detect_stack_use_after_return=0
UBSAN_OPTIONS=print_stacktrace=1:log_path=$ENRICH_ASAN_LOGS/ubsan
ASAN_SYMBOLIZER_PATH=$symbolizer
export LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS ASAN_SYMBOLIZER_PATH
exec "\$(dirname "\$0")/postgres.real" "\$@"
WRAPPER
  chmod 755 "$bin/postgres"
}

if [ "${1:-}" = "--wrap" ]; then
  wrap_postgres "$2"
  exit $?
fi

DIR=${ENRICH_ASAN_DIR:-/tmp/enrich-asan}
export ENRICH_ASAN_LOGS=$DIR/logs
rm -rf "$ENRICH_ASAN_LOGS"
mkdir -p "$ENRICH_ASAN_LOGS"
chmod 1777 "$ENRICH_ASAN_LOGS"

start=$(date +%s)
ENRICH_PRIVATE=$DIR \
ENRICH_MAKE_ARGS="with_llvm=no COPT=-fsanitize=address,undefined" \
  bash "$ROOT/scripts/test.sh" "$@"
rc=$?

# every report that names enrich fails the run; others are shown
ours=0
others=0
for f in "$ENRICH_ASAN_LOGS"/*; do
  [ -e "$f" ] || continue
  if grep -q 'enrich' "$f"; then
    ours=$((ours + 1)); echo "== sanitizer report involving enrich: $f"
  else
    others=$((others + 1)); echo "== sanitizer report outside enrich (not failed): $f"
  fi
  head -60 "$f"
done
echo "asan: suites exit $rc, $ours report(s) involving enrich, $others outside it, $(( $(date +%s) - start )) s"
[ $rc -eq 0 ] && [ $ours -eq 0 ]
