#!/usr/bin/env bash
# Runs every test of enrich on a throwaway cluster and the bundled provider
# emulator: the emulator's self-test, the pg_regress suite and the TAP
# suite.  Installs what is missing, builds and installs the extension,
# stops everything it started, and exits non-zero on any failure.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

bash "$ROOT/scripts/deps.sh" || exit 1
build_install || exit 1

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

echo "== provider emulator self-test"
bash "$ROOT/test/provider/selftest.sh"
record "emulator self-test" $?

start_emulator "$WORK"
start_cluster "$WORK"
export EMU_CTL="$ROOT/test/emu"

echo "== pg_regress"
make -C "$ROOT" -s installcheck
rc=$?
[ $rc -ne 0 ] && [ -f "$ROOT/regression.diffs" ] && head -200 "$ROOT/regression.diffs"
record "pg_regress" $rc

if ls "$ROOT"/test/t/*.pl >/dev/null 2>&1; then
  echo "== TAP"
  TAPDIR="$WORK/tap"
  as_pg mkdir -p "$TAPDIR"
  as_pg env EMU_CTL="$ROOT/test/emu" ENRICH_ROOT="$ROOT" \
    bash -c "cd '$TAPDIR' && PG_REGRESS=\$(dirname \$(pg_config --pgxs))/../test/regress/pg_regress \
      prove -I '$(dirname "$(pg_config --pgxs)")/../test/perl' -I '$ROOT/test/perl' -v '$ROOT'/test/t/*.pl"
  record "TAP" $?
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
