#!/usr/bin/env bash
# Runs every test of enrich on a throwaway cluster and the bundled provider
# emulator: the layer check of src/ (scripts/check-layers.pl), the
# shell scripts' syntax, the emulator's self-test, a short fuzzing run (test/fuzz), the
# pg_regress suite, the response check held against jsonb_in, the TAP
# suite, and then pg_regress and TAP again with enrich built with
# AddressSanitizer (scripts/test-asan.sh).  Installs what is missing,
# builds and installs the extension, stops everything it started, and
# exits non-zero on any failure.
#
#   bash scripts/test.sh                     everything
#   bash scripts/test.sh test/t/003_*.pl     only these TAP files
#
# ENRICH_PRIVATE=DIR builds and tests in a private copy of PostgreSQL
# (see scripts/lib.sh) instead of the system's installation.
# ENRICH_FUZZ_SECONDS (default 60) is the fuzzing time per target;
# ENRICH_ASAN=0 leaves out the AddressSanitizer run.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

bash "$ROOT/scripts/deps.sh" || exit 1
# the fuzz targets and the ASan run build against the installation this
# run started with, not the private copy that build_install may put first
START_PATH=$PATH
build_install || exit 1
# the sanitized build of scripts/test-asan.sh: the server preloads ASan
if [ -n "${ENRICH_ASAN_LOGS:-}" ]; then
  bash "$ROOT/scripts/test-asan.sh" --wrap "$PG_BIN" || exit 1
fi

WORK=$(make_workdir test)
cleanup() {
  stop_cluster "$WORK"
  stop_emulator "$WORK"
}
trap cleanup EXIT

passed=0
failed=0
record() {
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok: $1"
  else failed=$((failed + 1)); echo "FAILED: $1"; fi
}

ONLY_TAP=()
for f in "$@"; do ONLY_TAP+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"); done

# everything, or only the suites that load enrich (the ASan run, TAP files)
FULL=0
[ ${#ONLY_TAP[@]} -eq 0 ] && [ -z "${ENRICH_ASAN_LOGS:-}" ] && FULL=1

if [ $FULL -eq 1 ]; then
echo "== the layers of src/ (scripts/check-layers.pl, from the built objects)"
OBJDIR="$ROOT/src"
[ -n "${ENRICH_PRIVATE:-}" ] && OBJDIR="$ENRICH_PRIVATE/src/src"
perl "$ROOT/scripts/check-layers.pl" "$OBJDIR"
record "layers" $?

echo "== the shell scripts parse (bash -n: the benchmark is run by hand, not here)"
rc=0
for f in "$ROOT"/scripts/*.sh "$ROOT"/test/*/*.sh "$ROOT"/test/emu "$ROOT"/.ci/run; do
  [ -f "$f" ] || continue
  head -1 "$f" | grep -q bash || continue
  bash -n "$f" || { echo "does not parse: $f"; rc=1; }
done
record "shell syntax" $rc

echo "== provider emulator self-test"
bash "$ROOT/test/provider/selftest.sh"
record "emulator self-test" $?

echo "== fuzz: ${ENRICH_FUZZ_SECONDS:-60} s per target (test/fuzz/run.sh)"
PATH=$START_PATH bash "$ROOT/test/fuzz/run.sh" "${ENRICH_FUZZ_SECONDS:-60}"
record "fuzz" $?
fi

start_emulator "$WORK"
start_cluster "$WORK"
export EMU_CTL="$ROOT/test/emu"

if [ ${#ONLY_TAP[@]} -eq 0 ]; then
echo "== pg_regress"
make -C "$ROOT" -s installcheck
rc=$?
[ $rc -ne 0 ] && [ -f "$ROOT/regression.diffs" ] && head -200 "$ROOT/regression.diffs"
record "pg_regress" $rc
fi

if [ $FULL -eq 1 ]; then
echo "== the response check against jsonb_in, on the fuzz corpus"
bash "$ROOT/test/fuzz/jsonb-agree.sh"
record "response check agrees with jsonb_in" $?
fi

[ ${#ONLY_TAP[@]} -eq 0 ] && ONLY_TAP=("$ROOT"/test/t/*.pl)
if [ -e "${ONLY_TAP[0]}" ]; then
  echo "== TAP"
  TAPDIR="$WORK/tap"
  as_pg mkdir -p "$TAPDIR"
  as_pg env PATH="$PATH" EMU_CTL="$ROOT/test/emu" ENRICH_ROOT="$ROOT" \
    bash -c "cd '$TAPDIR' && PG_REGRESS=\$(dirname \$(pg_config --pgxs))/../test/regress/pg_regress \
      prove -I '$(dirname "$(pg_config --pgxs)")/../test/perl' -I '$ROOT/test/perl' -v ${ONLY_TAP[*]}"
  record "TAP" $?
fi

if [ $FULL -eq 1 ] && [ "${ENRICH_ASAN:-1}" != 0 ]; then
  echo "== AddressSanitizer: pg_regress and TAP again (scripts/test-asan.sh)"
  cleanup
  PATH=$START_PATH bash "$ROOT/scripts/test-asan.sh"
  record "AddressSanitizer run" $?
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
