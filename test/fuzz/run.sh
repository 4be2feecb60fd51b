#!/usr/bin/env bash
# Builds enrich's fuzz targets with clang (-fsanitize=fuzzer,address,
# undefined) and runs each for SECONDS (default 45), failing on any crash,
# leak, undefined behaviour or broken promise of the code under test.
#
#   bash test/fuzz/run.sh [SECONDS]
#   FUZZ_TARGETS="fuzz_response fuzz_headers" bash test/fuzz/run.sh 1800
#
# Targets: fuzz_domain and fuzz_linkedin (src/normalize_domain.c and
# src/normalize_linkedin.c, with src/normalize.c), fuzz_response
# (the body check of src/response.c), fuzz_headers (the header parsing of
# src/response_headers.c).
# Seeds come from make-seeds.sh (sql/normalize.sql and the provider
# emulator); each target's corpus grows in build/corpus/TARGET across runs.
# Inputs that once made a target fail are kept in crashes/TARGET and are
# replayed before fuzzing.  A failing input is left in build/artifacts/.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SECS=${1:-45}
TARGETS=${FUZZ_TARGETS:-fuzz_domain fuzz_linkedin fuzz_response fuzz_headers}
B=$HERE/build

declare -A SEEDS=([fuzz_domain]=normalize [fuzz_linkedin]=normalize
                  [fuzz_response]=response [fuzz_headers]=headers)
declare -A DICTS=([fuzz_domain]=url [fuzz_linkedin]=url
                  [fuzz_response]=json [fuzz_headers]=headers)
declare -A MAXLEN=([fuzz_domain]=4096 [fuzz_linkedin]=4096
                   [fuzz_response]=32768 [fuzz_headers]=1024)

make -C "$HERE" -s all || { echo "fuzz: build failed"; exit 1; }
bash "$HERE/make-seeds.sh" "$B/seeds" || { echo "fuzz: no seeds"; exit 1; }
mkdir -p "$B/artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# "stat::NAME: N" from a libFuzzer log
stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }

failed=0
for t in $TARGETS; do
  corpus=$B/corpus/$t
  log=$B/$t.log
  mkdir -p "$corpus"
  if compgen -G "$HERE/crashes/$t/*" >/dev/null; then
    if ! "$B/$t" "$HERE"/crashes/"$t"/* >"$log" 2>&1; then
      echo "FAILED: $t on a kept crash input"; tail -30 "$log"; failed=$((failed + 1)); continue
    fi
  fi
  "$B/$t" -max_total_time="$SECS" -max_len="${MAXLEN[$t]}" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -dict="$HERE/dict/${DICTS[$t]}.dict" \
    -artifact_prefix="$B/artifacts/$t-" "$corpus" "$B/seeds/${SEEDS[$t]}" >"$log" 2>&1
  rc=$?
  runs=$(stat number_of_executed_units "$log")
  rate=$(stat average_exec_per_sec "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  printf '%s: %s runs in %s s (%s/s), %s, corpus %s files\n' "$t" "${runs:-?}" "$SECS" \
    "${rate:-?}" "${cov:-cov: ?}" "$(ls "$corpus" | wc -l)"
  if [ $rc -ne 0 ]; then
    echo "FAILED: $t (exit $rc); its input is in $B/artifacts/"
    grep -E -A25 'ERROR: |broken promise|runtime error' "$log" | head -60
    failed=$((failed + 1))
  fi
done
[ $failed -eq 0 ]
