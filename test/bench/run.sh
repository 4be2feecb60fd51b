#!/usr/bin/env bash
# test/bench/run.sh: the benchmarks of enrich.
#
# Builds and installs the extension, starts a throwaway cluster (run by the
# user postgres, the worker preloaded) and the bundled provider emulator over
# loopback HTTPS, and prints figures with ratios against a baseline measured
# in the same run.  Benchmarks, not tests: no figure passes or fails on speed.
# The exit status is non-zero only if something breaks functionally (a drain
# that does not finish, a wrong count, a cache hit that calls the provider).
#
#   bash test/bench/run.sh                 everything (about 5 minutes)
#   bash test/bench/run.sh sync worker     a subset: emu sync syncmiss worker batch auto rate retention databases
#
# Environment: BENCH_SECONDS (pgbench run length, default 10), BENCH_KEEP=1
# (keep the scratch directory), BENCH_RATE_PATHS (the rate section's paths,
# default "worker batch sync8"), RETENTION_ITEMS (items through the queue in
# the retention section, default 1000000) and RETENTION_SECS (the
# retention it sets, default 60).  ENRICH_PRIVATE=DIR builds and runs in a
# private copy of PostgreSQL (scripts/lib.sh build_install).  A full run
# writes test/bench/results.md.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"

BENCH=$ROOT/test/bench
SECS=${BENCH_SECONDS:-10}
ALL_SECTIONS="emu sync syncmiss worker batch auto rate retention databases ledger analyze"
NCPU=$(nproc)
T_START=$(date +%s)

if [ "$(id -u)" -ne 0 ]; then
  echo "run.sh: run me as root (it installs the extension and runs the cluster as postgres)" >&2
  exit 2
fi
SECTIONS=${*:-$ALL_SECTIONS}
for s in $SECTIONS; do
  case " $ALL_SECTIONS " in *" $s "*) ;; *) echo "run.sh: unknown section '$s' (sections: $ALL_SECTIONS)" >&2; exit 2 ;; esac
done
want() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }

FAILURES=()
ROWS=()
fail() { FAILURES+=("$1"); echo "  FAIL: $1"; }
say() { printf '%s\n' "$*"; }
# A row of the summary table: figure | measured | baseline or limit | ratio | goal | notes
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }
# Arithmetic on decimals: calc 'a / b' [printf format]
calc() { awk "BEGIN { printf \"${2:-%.0f}\", ($1) }"; }

# ---------------------------------------------------------------- set-up
say "== build and install"
if ! build_install >/tmp/enrich-bench-build.$$ 2>&1; then
  cat /tmp/enrich-bench-build.$$; rm -f /tmp/enrich-bench-build.$$
  echo "run.sh: build failed" >&2; exit 1
fi
rm -f /tmp/enrich-bench-build.$$

WORK=$(make_workdir bench)
cleanup() {
  stop_cluster "$WORK"
  stop_emulator "$WORK"
  if [ "${BENCH_KEEP:-0}" = 1 ] || [ ${#FAILURES[@]} -gt 0 ]; then
    echo "scratch directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_emulator "$WORK"
EMU_PID=$(perl -MJSON::PP -e 'local $/; print decode_json(<>)->{pid}' "$WORK/emu/ports.json")
start_cluster "$WORK" || { echo "run.sh: the cluster did not start" >&2; exit 1; }
PSQL=(psql -X -q -At -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres)

# Runs statements (each its own transaction) in one session; prints the results.
q() {
  local args=() s
  for s in "$@"; do args+=(-c "$s"); done
  "${PSQL[@]}" "${args[@]}"
}
# Times statements (one psql session) with \timing: sets QT_OUT (result rows)
# and QT_SECS (the time of the last statement).
qt() {
  local out args=() s
  for s in "$@"; do args+=(-c "$s"); done
  out=$("${PSQL[@]}" -c '\timing on' "${args[@]}" 2>&1) || { printf '%s\n' "$out" >&2; QT_OUT=; QT_SECS=0; return 1; }
  QT_SECS=$(awk '/^Time: /{t=$2} END{printf "%.6f", t/1000}' <<<"$out")
  QT_OUT=$(grep -v '^Time: ' <<<"$out" || true)
}
emu_ctl() { curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' -d "$1" "$EMU_URL/_control" || fail "emulator control $1"; }
ledger_reset() { curl -sf -o /dev/null -X POST "$EMU_URL/_ledger/reset" || fail "emulator ledger reset"; }
# Prints ledger members given as dotted paths (peak_concurrency.leadlex), space-separated.
ledger_get() {
  curl -sf "$EMU_URL/_ledger" | perl -MJSON::PP -e '
    local $/; my $l = decode_json(<STDIN>); my @o;
    for my $p (@ARGV) { my $v = $l; for my $k (split /\./, $p) { $v = ref $v eq "HASH" ? $v->{$k} : undef } push @o, $v // 0 }
    print "@o\n";' "$@"
}
set_latency() { emu_ctl "{\"latency_ms\": $1, \"latency_jitter_ms\": 0}"; }
# enrich.max_concurrency is a sighup setting: ALTER SYSTEM and reload.
set_conc() {
  q "ALTER SYSTEM SET enrich.max_concurrency = $1" && q "SELECT pg_reload_conf()" >/dev/null
  sleep 0.5
}
worker_pid() { q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'enrich worker' AND datname = 'postgres'"; }
# Terminates the worker and waits for the postmaster to start a fresh one.
restart_worker() {
  local old new i
  old=$(worker_pid)
  q "SELECT pg_terminate_backend($old)" >/dev/null
  for i in $(seq 1 100); do
    new=$(worker_pid)
    if [ -n "$new" ] && [ "$new" != "$old" ]; then sleep 1; return 0; fi
    sleep 0.1
  done
  fail "the worker was not restarted after pg_terminate_backend"
  return 1
}
# Memory of a process in kB: RssAnon Private_Dirty Pss VmRSS VmHWM RssShmem
mem_sample() {
  perl -e '
    my %m; for my $f ("/proc/$ARGV[0]/status", "/proc/$ARGV[0]/smaps_rollup") {
      open my $h, "<", $f or die "$f: $!"; while (<$h>) { $m{$1} = $2 if /^(\w+):\s+(\d+) kB/ } }
    print join(" ", map { $m{$_} // 0 } qw(RssAnon Private_Dirty Pss VmRSS VmHWM RssShmem)), "\n";' "$1"
}

# CPU accounting between two snapshots, as % of one core: the worker, the
# rest of the cluster (backends that exited included, through the
# postmaster's cutime), the emulator, and the whole machine.
cpu_snap() {
  perl -e '
    sub ticks { my ($p, $kids) = @_; open my $f, "<", "/proc/$p/stat" or return 0; my $s = <$f>;
      $s =~ s/^.*\) //; my @f = split / /, $s; return $f[11] + $f[12] + ($kids ? $f[13] + $f[14] : 0) }
    my ($w, $pm, $emu) = @ARGV; my $pg = ticks($pm, 1);
    opendir my $d, "/proc"; for my $p (grep /^\d+$/, readdir $d) {
      next if $p == $w; open my $f, "<", "/proc/$p/stat" or next; my $s = <$f>; $s =~ s/^.*\) //;
      my @f = split / /, $s; $pg += $f[11] + $f[12] if $f[1] == $pm }
    open my $st, "<", "/proc/stat"; my @c = split " ", scalar <$st>; shift @c;
    my $tot = 0; $tot += $_ for @c[0..7];
    print join(" ", ticks($w, 0), $pg, ticks($emu, 0), $tot - $c[3] - $c[4], $tot), "\n";' \
    "$(worker_pid)" "$(head -1 "$WORK/data/postmaster.pid")" "$EMU_PID"
}
CPU_A=
cpu_begin() { CPU_A=$(cpu_snap); }
# Prints the split since cpu_begin and sets CPU_NOTE for the summary.
cpu_end() {
  local b
  b=$(cpu_snap)
  read -r CPU_W CPU_PG CPU_EMU CPU_BUSY CPU_REST <<<"$(awk -v n="$NCPU" -v a="$CPU_A" -v b="$b" 'BEGIN {
    split(a, x, " "); split(b, y, " "); wall = (y[5] - x[5]) / n; if (wall <= 0) wall = 1;
    w = (y[1]-x[1]) / wall * 100; pg = (y[2]-x[2]) / wall * 100; e = (y[3]-x[3]) / wall * 100;
    busy = (y[4]-x[4]) / wall * 100; r = busy - w - pg - e; if (r < 0) r = 0;
    printf "%.0f %.0f %.0f %.0f %.0f", w, pg, e, busy, r }')"
  say "  CPU, % of one core: worker $CPU_W, other postgres $CPU_PG, emulator $CPU_EMU, rest (clients, system) $CPU_REST; machine busy $CPU_BUSY of $((NCPU * 100))"
  CPU_NOTE="CPU worker/pg/emu/rest ${CPU_W}/${CPU_PG}/${CPU_EMU}/${CPU_REST} %"
}

say "== cluster $PGHOST port $PGPORT, emulator https $EMU_HTTPS (pid $EMU_PID), scratch $WORK"
q "CREATE EXTENSION enrich" || { echo "run.sh: CREATE EXTENSION failed" >&2; exit 1; }
for i in $(seq 1 50); do [ -n "$(worker_pid)" ] && break; sleep 0.1; done
[ -n "$(worker_pid)" ] || { echo "run.sh: the enrich worker is not running" >&2; exit 1; }

# The emulator as the baseline instrument: no rate limit, no latency, a
# balance and quota that never run out.
emu_setup() {
  emu_ctl '{"reset": true, "balance": {"wbk_test_key": 1000000000000}, "daily_quota": {"leadlex": 1000000000000}, "rate_limit": null, "latency_ms": 0, "latency_jitter_ms": 0}'
}

# ---------------------------------------------------------------- emu
# The instrument first: its own throughput over the same HTTPS listener.
bench_emu() {
  local out rate errs
  say
  say "== 0. emulator throughput (test/provider/loadtest.js, HTTPS, LeadLex, 0 ms, 5 s)"
  for mode in "HTTP/1.1 keep-alive, 64 connections|" "HTTP/2, one session, 64 streams|--h2"; do
    local label=${mode%%|*} flag=${mode#*|}
    cpu_begin
    out=$(node "$ROOT/test/provider/loadtest.js" --url "https://localhost:$EMU_HTTPS" --ca "$EMU_CA" \
      --provider leadlex --concurrency 64 --seconds 5 $flag 2>&1)
    rate=$(sed -n 's/.*rate=\([0-9.]*\).*/\1/p' <<<"$out")
    errs=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$out")
    say "  $label: ${rate:-?} req/s, errors ${errs:-?}"
    cpu_end
    [ -n "$rate" ] && [ "${errs:-1}" = 0 ] || fail "emulator load test ($label): $out"
    row "emulator alone, $label" "$(calc "${rate:-0}") req/s" "" "" "≥ 5,000 req/s" "load generator on the same 2 cores; $CPU_NOTE"
  done
  emu_setup
}

# ---------------------------------------------------------------- sync
bench_sync() {
  local before after conn0 conn1 req0 req1 t tb th ratio
  say
  say "== 1. cache hits: enrich_company() against a plain indexed lookup of enrich.companies"
  set_latency 0
  set_conc 256
  qt "SELECT status || ' ' || count(*) FROM enrich_companies(array(SELECT format('d%s.com', g) FROM generate_series(1, 10000) g)) GROUP BY status"
  say "  cache filled with 10,000 domains through enrich_companies(): $QT_OUT ($(calc "10000 / $QT_SECS") req/s)"
  [ "$QT_OUT" = "fetched 10000" ] || fail "filling the cache: expected 'fetched 10000', got '$QT_OUT'"
  q "CREATE TABLE bench_list AS SELECT format('d%s.com', g) AS domain FROM generate_series(1, 10000) g" \
    "VACUUM ANALYZE bench_list" "VACUUM ANALYZE enrich.companies" "CHECKPOINT"
  t=$(q "SELECT count(*) FROM enrich.companies WHERE domain LIKE 'd%.com' AND matched")
  [ "$t" = 10000 ] || fail "enrich.companies holds $t of the 10,000 domains"

  printf '\\set i random(1, 10000)\nSELECT enrich_company('"'"'d'"'"' || :i || '"'"'.com'"'"');\n' >"$WORK/hit.sql"
  printf '\\set i random(1, 10000)\nSELECT result FROM enrich.companies WHERE domain = '"'"'d'"'"' || :i || '"'"'.com'"'"';\n' >"$WORK/base.sql"
  chmod 644 "$WORK"/*.sql
  pgb() {  # pgb script mode: sets PGB_TPS
    local out
    PGB_TPS=0
    out=$(as_pg pgbench -n -h "$PGHOST" -p "$PGPORT" -U postgres -M "$2" -f "$1" -T "$SECS" -c 2 -j 2 postgres 2>&1) ||
      { fail "pgbench $1 -M $2: $out"; return; }
    grep -q 'number of failed transactions: [1-9]' <<<"$out" && fail "pgbench $1 -M $2 had failed transactions"
    PGB_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
    [ -n "$PGB_TPS" ] || { fail "pgbench $1 -M $2 printed no tps"; PGB_TPS=0; }
  }
  req0=$(ledger_get requests.leadlex)
  for mode in simple prepared; do
    # alternating, best of two each, so that drift hits both sides
    tb=0; th=0
    for rep in 1 2; do
      pgb "$WORK/base.sql" $mode; tb=$(calc "$PGB_TPS > $tb ? $PGB_TPS : $tb" %.1f)
      say "  pgbench -M $mode, run $rep: indexed SELECT $(calc "$PGB_TPS") queries/s"
      cpu_begin; pgb "$WORK/hit.sql" $mode; th=$(calc "$PGB_TPS > $th ? $PGB_TPS : $th" %.1f); cpu_end
      say "  pgbench -M $mode, run $rep: enrich_company() $(calc "$PGB_TPS") calls/s"
    done
    ratio=$(calc "$th / $tb" %.2f)
    say "  pgbench -c 2 -j 2 -T $SECS -M $mode, best of 2: enrich_company() $(calc "$th") calls/s, indexed SELECT $(calc "$tb") queries/s, ratio $ratio"
    row "cache hit, one call per query (pgbench -M $mode, 2 clients)" "$(calc "$th") calls/s" "$(calc "$tb")/s indexed SELECT" "$ratio" "≥ 0.5" "enrich: $CPU_NOTE"
  done

  # one statement over 10,000 cached rows; best of 3
  best() {  # best label sql expected: sets BEST, the best time in seconds
    local i
    BEST=0
    for i in 1 2 3; do
      qt "$2" || { fail "$1"; BEST=1000; return; }
      [ "$QT_OUT" = "$3" ] || fail "$1: expected $3, got '$QT_OUT'"
      BEST=$(awk -v a="$BEST" -v c="$QT_SECS" 'BEGIN { print (a == 0 || c < a) ? c : a }')
    done
  }
  local te tj tl
  cpu_begin
  best "count(enrich_company(domain))" "SELECT count(enrich_company(domain)) FROM bench_list" 10000; te=$BEST
  cpu_end
  best "join" "SELECT count(c.result) FROM bench_list l JOIN enrich.companies c ON c.domain = l.domain" 10000; tj=$BEST
  best "lookup per row" "SELECT count((SELECT c.result FROM enrich.companies c WHERE c.domain = l.domain)) FROM bench_list l" 10000; tl=$BEST
  say "  one statement, 10,000 cached rows (best of 3): count(enrich_company(domain)) $(calc "10000 / $te") rows/s ($(calc "$te * 1000" %.1f) ms);"
  say "    join $(calc "10000 / $tj") rows/s ($(calc "$tj * 1000" %.1f) ms), ratio $(calc "$tj / $te" %.2f);" \
      "index lookup per row (scalar subquery) $(calc "10000 / $tl") rows/s ($(calc "$tl * 1000" %.1f) ms), ratio $(calc "$tl / $te" %.2f)"
  row "cache hit, one statement over 10,000 rows" "$(calc "10000 / $te") rows/s" "$(calc "10000 / $tl")/s index lookup per row" "$(calc "$tl / $te" %.2f)" "≥ 0.5" "vs the planner's hash join ($(calc "10000 / $tj")/s): $(calc "$tj / $te" %.2f)"
  req1=$(ledger_get requests.leadlex)
  say "  provider requests during the cache-hit runs: $((req1 - req0))"
  [ "$req1" = "$req0" ] || fail "cache hits sent $((req1 - req0)) request(s) to the provider"

  say
  say "== 2. cache misses over HTTPS at 0 ms: one kept-alive connection vs a new connection per call"
  local n=2000 run=0 bka=0 bno=0 cka=0 cno=0 ka sqlset res c0 c1
  for rep in 1 2; do
    for ka in on off; do
      run=$((run + 1))
      sqlset="SET enrich.keep_alive = $ka"
      read -r req0 c0 <<<"$(ledger_get requests.leadlex connections.https)"
      cpu_begin
      qt "$sqlset" "SELECT count(enrich_company(format('miss-%s-%s.com', $run, g))) FROM generate_series(1, $n) g" ||
        fail "cache misses (keep_alive $ka)"
      cpu_end
      read -r req1 c1 <<<"$(ledger_get requests.leadlex connections.https)"
      say "  keep_alive = $ka, run $rep: $(calc "$n / $QT_SECS") calls/s, $((req1 - req0)) requests over $((c1 - c0)) connection(s)"
      [ "$QT_OUT" = "$n" ] || fail "cache misses (keep_alive $ka): count $QT_OUT, expected $n"
      [ $((req1 - req0)) -eq $n ] || fail "cache misses (keep_alive $ka): $((req1 - req0)) requests, expected $n"
      if [ $ka = on ]; then
        bka=$(calc "$bka > $n / $QT_SECS ? $bka : $n / $QT_SECS" %.1f); cka=$((c1 - c0)); local note_ka=$CPU_NOTE
      else
        bno=$(calc "$bno > $n / $QT_SECS ? $bno : $n / $QT_SECS" %.1f); cno=$((c1 - c0)); local note_no=$CPU_NOTE
      fi
    done
  done
  ratio=$(calc "$bka / $bno" %.2f)
  say "  best of 2: kept-alive $(calc "$bka") calls/s, new connection each $(calc "$bno") calls/s, ratio $ratio"
  [ "$cka" -le 2 ] || fail "keep-alive used $cka connections for $n calls"
  row "cache miss, HTTPS, 0 ms, kept-alive (one statement, $n calls)" "$(calc "$bka") calls/s" "$(calc "$bno")/s new connection each" "$ratio" "well ahead" "$cka vs $cno connections; kept-alive: $note_ka"
}

# ---------------------------------------------------------------- syncmiss
# Synchronous misses one after another, as `SELECT enrich_company(domain)
# FROM accounts` makes them, against libcurl alone making the same requests
# one after another on one kept-alive connection (test/bench/curl_seq.c):
# at 0 and 1 ms provider latency, over plain HTTP and HTTPS.  Each call is
# timed inside the server with clock_timestamp() around it, in a PL/pgSQL
# loop that is one statement (its own cost is a few microseconds a call);
# the client's requests are timed the same way, around curl_easy_perform.
bench_syncmiss() {
  local lat proto n rep run=0 out url base ratio goal_r goal_m
  say
  say "== 2b. synchronous misses one at a time: enrich_company() in one statement vs libcurl alone (test/bench/curl_seq.c)"
  if ! cc -O2 -Wall -o "$WORK/curl_seq" "$BENCH/curl_seq.c" $(pkg-config --cflags --libs libcurl) 2>"$WORK/cc-seq.log"; then
    fail "building test/bench/curl_seq.c: $(cat "$WORK/cc-seq.log")"; return
  fi
  q "CREATE OR REPLACE FUNCTION bench_syncmiss(prefix text, n int,
       OUT answered int, OUT secs float8, OUT p50 float8, OUT p99 float8, OUT max_ms float8)
     LANGUAGE plpgsql AS \$\$
     DECLARE t0 timestamptz; ts timestamptz; lat float8[] := '{}'; r jsonb;
     BEGIN
       answered := 0;
       t0 := clock_timestamp();
       FOR g IN 1 .. n LOOP
         ts := clock_timestamp();
         r := enrich_company(format('%s-%s.com', prefix, g));
         lat := lat || extract(epoch FROM clock_timestamp() - ts)::float8 * 1000;
         IF r IS NOT NULL THEN answered := answered + 1; END IF;
       END LOOP;
       secs := extract(epoch FROM clock_timestamp() - t0);
       SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x), percentile_cont(0.99) WITHIN GROUP (ORDER BY x), max(x)
         INTO p50, p99, max_ms FROM unnest(lat) x;
     END \$\$" >/dev/null || { fail "creating bench_syncmiss()"; return; }
  for lat in 0 1; do
    set_latency "$lat"
    n=$([ "$lat" = 0 ] && echo 2000 || echo 1000)
    for proto in HTTP HTTPS; do
      if [ $proto = HTTP ]; then base="http://127.0.0.1:$EMU_HTTP/functions/v1/api-gateway"
      else base="https://127.0.0.1:$EMU_HTTPS/functions/v1/api-gateway"; fi
      # best of 2 each (by rate), alternating, so that drift hits both sides
      local e_rate=0 e_p50 e_p99 e_max c_rate=0 c_p50 c_p99 c_max d_rate=0 r0 r1 e_note
      for rep in 1 2; do
        run=$((run + 1))
        out=$("$WORK/curl_seq" "$base" "$EMU_CA" "$n" "seqc-$lat-${proto,,}-$run" 2>&1) || fail "curl_seq $proto $lat ms: $(tail -3 <<<"$out")"
        local rate p50 p99 mx
        rate=$(sed -n 's/.*rate=\([0-9.]*\).*/\1/p' <<<"$out"); p50=$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$out")
        p99=$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' <<<"$out"); mx=$(sed -n 's/.*max_ms=\([0-9.]*\).*/\1/p' <<<"$out")
        say "  $proto, $lat ms, run $rep: libcurl alone ${rate:-?} calls/s, p50 ${p50:-?} ms, p99 ${p99:-?} ms, max ${mx:-?} ms"
        if [ -n "$rate" ] && [ "$(calc "$rate > $c_rate" %d)" = 1 ]; then c_rate=$rate; c_p50=$p50; c_p99=$p99; c_max=$mx; fi
        # the floor of the extension's design: libcurl plus one durable
        # append per answer (the spool file's fdatasync), on the same disk
        out=$("$WORK/curl_seq" "$base" "$EMU_CA" "$n" "seqd-$lat-${proto,,}-$run" "$WORK/curl_seq.spool" 2>&1) ||
          fail "curl_seq with a durable write, $proto $lat ms: $(tail -3 <<<"$out")"
        rate=$(sed -n 's/.*rate=\([0-9.]*\).*/\1/p' <<<"$out")
        say "  $proto, $lat ms, run $rep: libcurl + one fdatasync per answer ${rate:-?} calls/s"
        if [ -n "$rate" ] && [ "$(calc "$rate > $d_rate" %d)" = 1 ]; then d_rate=$rate; fi

        r0=$(ledger_get requests.leadlex)
        cpu_begin
        out=$("${PSQL[@]}" -F ' ' -c "SET enrich.leadlex_url = '$base'" \
          -c "SELECT answered, secs, p50, p99, max_ms FROM bench_syncmiss('seqe-$lat-${proto,,}-$run', $n)" 2>&1) ||
          { fail "enrich_company() misses, $proto $lat ms: $out"; continue; }
        cpu_end
        r1=$(ledger_get requests.leadlex)
        local ans secs
        read -r ans secs p50 p99 mx <<<"$out"
        rate=$(calc "$n / $secs" %.1f)
        say "  $proto, $lat ms, run $rep: enrich_company() $rate calls/s, p50 $(calc "$p50" %.3f) ms, p99 $(calc "$p99" %.3f) ms, max $(calc "$mx" %.3f) ms; $((r1 - r0)) requests"
        [ "$ans" = "$n" ] || fail "enrich_company() misses, $proto $lat ms: $ans answers of $n"
        [ $((r1 - r0)) -eq "$n" ] || fail "enrich_company() misses, $proto $lat ms: $((r1 - r0)) requests for $n calls"
        if [ "$(calc "$rate > $e_rate" %d)" = 1 ]; then e_rate=$rate; e_p50=$p50; e_p99=$p99; e_max=$mx; e_note=$CPU_NOTE; fi
      done
      ratio=$(calc "$e_rate / $c_rate" %.2f)
      goal_r=""
      if [ $proto = HTTP ] && [ "$lat" = 0 ]; then goal_r="≥ 0.6"; fi
      if [ "$lat" = 1 ]; then goal_r="≥ 0.8"; fi
      local verdict=""
      [ -n "$goal_r" ] && verdict=$([ "$(calc "$ratio >= ${goal_r#≥ }" %d)" = 1 ] && echo met || echo "NOT met")
      goal_m=$(calc "5 * $e_p50 + 20" %.1f)
      local mverdict; mverdict=$([ "$(calc "$e_max <= $goal_m" %d)" = 1 ] && echo met || echo "NOT met")
      say "  $proto, $lat ms, best of 2: enrich $(calc "$e_rate") calls/s vs libcurl alone $(calc "$c_rate") calls/s: ratio $ratio${goal_r:+ (goal $goal_r: $verdict)};" \
          "max $(calc "$e_max" %.1f) ms vs 5 × p50 + 20 = $goal_m ms ($mverdict);" \
          "libcurl + one fdatasync per answer $(calc "$d_rate") calls/s ($(calc "$d_rate / $c_rate" %.2f) of libcurl alone; enrich $(calc "$e_rate / $d_rate" %.2f) of it)"
      row "sync miss, one at a time, $proto, $lat ms (one statement, $n calls)" \
        "$(calc "$e_rate") calls/s; p50 $(calc "$e_p50" %.2f) / p99 $(calc "$e_p99" %.2f) / max $(calc "$e_max" %.1f) ms" \
        "$(calc "$c_rate") calls/s libcurl alone; p50 $(calc "$c_p50" %.2f) / p99 $(calc "$c_p99" %.2f) / max $(calc "$c_max" %.1f) ms" \
        "$ratio" "${goal_r:+ratio $goal_r ($verdict); }max ≤ 5 × p50 + 20 ms ($mverdict)" \
        "libcurl + one fdatasync per answer: $(calc "$d_rate") calls/s, enrich $(calc "$e_rate / $d_rate" %.2f) of it; enrich: $e_note"
    done
  done
  set_latency 0
}

# ---------------------------------------------------------------- worker
# Enqueues N keys PREFIX-1.com ... in one statement; sets ENQ_SECS and ENQ_T0
# (the end of the statement, the start of the drain).
enqueue() {
  local out
  out=$("${PSQL[@]}" -F ' ' -c "SELECT count(enrich.enqueue_company(format('%s-%s.com', '$1', g))),
      extract(epoch FROM max(clock_timestamp()) - statement_timestamp()), max(clock_timestamp())
    FROM generate_series(1, $2) g") || { fail "enqueue $2 x $1"; return 1; }
  ENQ_N=$(cut -d' ' -f1 <<<"$out"); ENQ_SECS=$(cut -d' ' -f2 <<<"$out"); ENQ_T0=$(cut -d' ' -f3- <<<"$out")
  [ "$ENQ_N" = "$2" ] || fail "enqueue $1: $ENQ_N of $2"
}
# Waits for the queue to empty and checks every PREFIX item is done; sets
# DR_SECS (last finished_at minus the end of the enqueue) and DR_RATE.
await_drain() {
  local p=$1 n=$2 out ok done other
  out=$("${PSQL[@]}" -F ' ' -c "SELECT enrich.wait('5 min')" \
    -c "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status <> 'done'),
          extract(epoch FROM max(finished_at) - '$ENQ_T0'::timestamptz), extract(epoch FROM clock_timestamp() - '$ENQ_T0'::timestamptz)
        FROM enrich.queue WHERE kind = 'company' AND key LIKE '$p-%'") || { fail "waiting for the $p drain"; return 1; }
  ok=$(head -1 <<<"$out"); read -r done other DR_SECS DR_WALL <<<"$(tail -1 <<<"$out")"
  DR_RATE=$(calc "$n / $DR_SECS")
  [ "$ok" = t ] || fail "drain $p: enrich.wait() timed out"
  [ "$done" = "$n" ] && [ "$other" = 0 ] || {
    fail "drain $p: $done of $n done, $other other"
    q "SELECT status, count(*), min(last_error) FROM enrich.queue WHERE key LIKE '$p-%' GROUP BY 1" >&2
  }
}
drain() {  # drain PREFIX N: enqueue, then time the drain with the CPU split
  enqueue "$1" "$2" || return 1
  cpu_begin
  await_drain "$1" "$2"
  cpu_end
}

bench_worker() {
  local peak conn h2 pid idle inflight after nin i s best
  say
  say "== 3. worker: 10,000 items at 50 ms latency, max_concurrency 64 (limit 64 / 0.05 s = 1,280/s)"
  set_conc 64; set_latency 50; ledger_reset
  drain w50 10000
  read -r peak conn h2 <<<"$(ledger_get peak_concurrency.leadlex connections.https connections.h2_sessions)"
  say "  $DR_RATE items/s ($(calc "$DR_SECS" %.2f) s to the last finished item, $(calc "$DR_WALL" %.2f) s until enrich.wait() returned), $(calc "$DR_RATE / 1280" %.2f) of the limit; emulator peak concurrency $peak, $conn connection(s), $h2 HTTP/2 session(s)"
  row "worker drain, 10,000 at 50 ms, max_concurrency 64" "$DR_RATE items/s" "1,280/s limit" "$(calc "$DR_RATE / 1280" %.2f)" "≥ 0.9" "peak concurrency $peak; $CPU_NOTE"

  say
  say "== 4. worker: CPU-bound drain, 10,000 items at 0 ms, max_concurrency 256"
  set_conc 256; set_latency 0; ledger_reset
  drain cpu 10000
  read -r peak conn h2 <<<"$(ledger_get peak_concurrency.leadlex connections.https connections.h2_sessions)"
  say "  $DR_RATE requests/s ($(calc "$DR_SECS" %.2f) s, cache and queue writes included); emulator peak concurrency $peak, $conn connection(s)"
  row "worker drain, 10,000 at 0 ms, max_concurrency 256" "$DR_RATE req/s" "4,400/s" "$(calc "$DR_RATE / 4400" %.2f)" "≥ 4,400/s" "peak concurrency $peak; $CPU_NOTE"

  say
  say "== 5. worker private memory per request in flight (2 s latency, max_concurrency 256)"
  # a fresh worker, warmed up by a few requests one at a time (TLS, plans)
  set_conc 1; set_latency 0
  restart_worker
  drain mwarm 20 >/dev/null
  set_conc 256
  pid=$(worker_pid)
  sleep 1
  idle=$(mem_sample "$pid")
  set_latency 2000; ledger_reset
  enqueue mem 256
  nin=0
  for i in $(seq 1 100); do
    nin=$(ledger_get in_flight.leadlex)
    [ "$nin" -ge 256 ] && break
    sleep 0.05
  done
  sleep 0.2
  read -r nin conn h2 <<<"$(ledger_get in_flight.leadlex connections.https connections.h2_sessions)"
  inflight=$(mem_sample "$pid")
  await_drain mem 256
  after=$(mem_sample "$pid")
  set_latency 0
  if [ "$nin" -lt 1 ]; then
    fail "no request in flight to measure"
  else
    read -r a_anon a_pd a_pss a_rss a_hwm _ <<<"$idle"
    read -r b_anon b_pd b_pss b_rss b_hwm _ <<<"$inflight"
    read -r c_anon c_pd _ <<<"$after"
    say "  idle:      RssAnon $a_anon kB, Private_Dirty $a_pd kB, Pss $a_pss kB, VmRSS $a_rss kB"
    say "  $nin in flight: RssAnon $b_anon kB, Private_Dirty $b_pd kB, Pss $b_pss kB, VmRSS $b_rss kB"
    say "  idle again: RssAnon $c_anon kB, Private_Dirty $c_pd kB"
    say "  the $nin requests in flight use $conn connection(s), $h2 HTTP/2 session(s)"
    say "  per request in flight: RssAnon $(calc "($b_anon - $a_anon) / $nin" %.1f) kB, Private_Dirty $(calc "($b_pd - $a_pd) / $nin" %.1f) kB"
    # the baseline: libcurl alone making the same requests, same latency
    local base_kb=0 out
    if cc -O2 -o "$WORK/curl_inflight" "$BENCH/curl_inflight.c" $(pkg-config --cflags --libs libcurl) 2>"$WORK/cc.log"; then
      set_latency 2000
      out=$("$WORK/curl_inflight" "https://127.0.0.1:$EMU_HTTPS/functions/v1/api-gateway/v1/enrich/company" "$EMU_CA" "$nin") ||
        fail "curl_inflight: $out"
      set_latency 0
      base_kb=$(sed -n 's/.*bytes_per_request=\([0-9]*\).*/\1/p' <<<"$out")
      base_kb=$(calc "${base_kb:-0} / 1024" %.1f)
      say "  libcurl alone, the same $nin requests in flight: $base_kb kB/request ($out)"
    else
      fail "building test/bench/curl_inflight.c: $(cat "$WORK/cc.log")"
    fi
    row "worker private memory per request in flight ($nin in flight)" "$(calc "($b_pd - $a_pd) / $nin" %.1f) kB" "$base_kb kB libcurl alone" "$(calc "$base_kb > 0 ? ($b_pd - $a_pd) / $nin / $base_kb : 0" %.2f)" "≤ 10 kB" "RssAnon $(calc "($b_anon - $a_anon) / $nin" %.1f) kB/request; $conn TLS connection(s); worker warmed up at concurrency 1"
  fi

  say
  say "== 7, 8. enqueue rate, and the worker's peak RSS after 10,000 and 110,000 requests (0 ms, max_concurrency 256)"
  restart_worker
  pid=$(worker_pid)
  s=$(mem_sample "$pid"); read -r a_anon _ _ a_rss a_hwm a_shm <<<"$s"
  say "  fresh worker: VmHWM $a_hwm kB, VmRSS $a_rss kB (RssAnon $a_anon, RssShmem $a_shm)"
  drain r 10000
  s=$(mem_sample "$pid"); read -r b_anon _ _ b_rss b_hwm b_shm <<<"$s"
  say "  after 10,000 requests ($DR_RATE/s): VmHWM $b_hwm kB, VmRSS $b_rss kB (RssAnon $b_anon, RssShmem $b_shm)"
  local r10k=$DR_RATE
  enqueue q 100000
  local enq=$ENQ_SECS
  say "  enqueue: 100,000 rows in $(calc "$enq" %.2f) s = $(calc "100000 / $enq") rows/s"
  cpu_begin
  await_drain q 100000
  cpu_end
  s=$(mem_sample "$pid"); read -r c_anon _ _ c_rss c_hwm c_shm <<<"$s"
  say "  after 110,000 requests (the 100,000 at $DR_RATE/s): VmHWM $c_hwm kB, VmRSS $c_rss kB (RssAnon $c_anon, RssShmem $c_shm)"
  row "enqueue_company(), one statement of 100,000" "$(calc "100000 / $enq") rows/s" "" "" "100,000 in seconds" ""
  row "worker drain, 100,000 at 0 ms, max_concurrency 256 (queue of 120,000 rows)" "$DR_RATE req/s" "4,400/s" "$(calc "$DR_RATE / 4400" %.2f)" "≥ 4,400/s" "$CPU_NOTE"
  row "worker memory after 10,000 / 110,000 requests" "private (RssAnon) $(calc "$b_anon / 1024" %.1f) / $(calc "$c_anon / 1024" %.1f) MB" "fresh worker $(calc "$a_anon / 1024" %.1f) MB" "$(calc "$c_anon / $b_anon" %.2f)" "flat" "VmHWM $(calc "$b_hwm / 1024" %.1f) / $(calc "$c_hwm / 1024" %.1f) MB, of which shared buffers touched (RssShmem) $(calc "$b_shm / 1024" %.1f) / $(calc "$c_shm / 1024" %.1f) MB"
}

# ---------------------------------------------------------------- batch
bench_batch() {
  local peak lat conc p goal
  say
  say "== 6. batch: enrich_companies() over 10,000 new domains in one call"
  for spec in "0 256 b0" "50 64 b50"; do
    read -r lat conc p <<<"$spec"
    set_conc "$conc"; set_latency "$lat"; ledger_reset
    cpu_begin
    qt "SELECT count(*) FILTER (WHERE status = 'fetched') || ' ' || count(*)
          FROM enrich_companies(array(SELECT format('$p-%s.com', g) FROM generate_series(1, 10000) g))" ||
      fail "enrich_companies() at $lat ms"
    cpu_end
    peak=$(ledger_get peak_concurrency.leadlex)
    local rate; rate=$(calc "10000 / $QT_SECS")
    [ "$QT_OUT" = "10000 10000" ] || fail "enrich_companies() at $lat ms: fetched/total '$QT_OUT'"
    if [ "$lat" = 0 ]; then
      say "  0 ms, max_concurrency 256: $rate requests/s ($(calc "$QT_SECS" %.2f) s), peak concurrency $peak"
      row "enrich_companies(), 10,000 at 0 ms, max_concurrency 256" "$rate req/s" "4,400/s" "$(calc "$rate / 4400" %.2f)" "≥ 4,400/s" "peak concurrency $peak; $CPU_NOTE"
    else
      say "  50 ms, max_concurrency 64: $rate requests/s ($(calc "$QT_SECS" %.2f) s), $(calc "$rate / 1280" %.2f) of 1,280/s, peak concurrency $peak"
      row "enrich_companies(), 10,000 at 50 ms, max_concurrency 64" "$rate req/s" "1,280/s limit" "$(calc "$rate / 1280" %.2f)" "≥ 0.9" "peak concurrency $peak; $CPU_NOTE"
    fi
  done
  set_latency 0
}

# ---------------------------------------------------------------- auto
# An INSERT into a table enriched on insert against the same INSERT into
# the same table without it, and refresh() queueing stale answers.
bench_auto() {
  local n=100000 ta tb best_a=0 best_b=0 rep t
  say
  say "== 9. INSERT of $n rows with and without auto_enrich (best of 2, alternating)"
  set_conc 256; set_latency 0; ledger_reset
  q "CREATE TABLE bench_plain (id bigserial PRIMARY KEY, domain text, company jsonb)" \
    "CREATE INDEX ON bench_plain (domain)" \
    "CREATE TABLE bench_auto (id bigserial PRIMARY KEY, domain text, company jsonb)" \
    "CREATE INDEX ON bench_auto (domain)" \
    "SELECT enrich.auto_enrich('bench_auto', 'company', 'domain', 'company')" >/dev/null ||
    { fail "auto_enrich set-up"; return; }
  for rep in 1 2; do
    q "TRUNCATE bench_plain" "TRUNCATE bench_auto" "CHECKPOINT" >/dev/null
    qt "INSERT INTO bench_plain (domain) SELECT format('ins-%s.com', g) FROM generate_series(1, $n) g" ||
      fail "INSERT without auto_enrich"
    ta=$QT_SECS
    qt "INSERT INTO bench_auto (domain) SELECT format('ins-%s.com', g) FROM generate_series(1, $n) g" ||
      fail "INSERT with auto_enrich"
    tb=$QT_SECS
    say "  run $rep: without $(calc "$ta * 1000") ms, with auto_enrich $(calc "$tb * 1000") ms"
    best_a=$(calc "$best_a == 0 || $ta < $best_a ? $ta : $best_a" %.6f)
    best_b=$(calc "$best_b == 0 || $tb < $best_b ? $tb : $best_b" %.6f)
    # the worker fills the table in; the next run starts from a quiet server
    cpu_begin
    qt "SELECT enrich.wait('10 min')" || fail "waiting for the auto_enrich rows"
    cpu_end
    [ "$QT_OUT" = t ] || fail "enrich.wait() timed out after the auto_enrich INSERT"
    t=$(q "SELECT count(*) FROM bench_auto WHERE company IS NULL")
    [ "$t" = 0 ] || fail "$t rows of bench_auto not filled in"
    say "  run $rep: the worker filled the $n rows in $(calc "$QT_SECS" %.1f) s after commit ($(calc "$n / $QT_SECS") rows/s; $([ $rep = 1 ] && echo "one request per row" || echo "from the cache, no request"))"
    [ $rep = 1 ] && local fill1=$(calc "$n / $QT_SECS") note1=$CPU_NOTE
  done
  local req charged; read -r req charged <<<"$(ledger_get requests.leadlex charged.leadlex.wbk_test_key)"
  # (a request resent after an HTTP/2 session was torn down is a free replay)
  [ "$charged" = "$n" ] || fail "auto_enrich: $charged credits for $n distinct keys, expected $n"
  say "  $req requests, $charged credits for $n distinct keys"
  row "INSERT of 100,000 rows with auto_enrich" "$(calc "$best_b * 1000") ms" "$(calc "$best_a * 1000") ms without" "$(calc "$best_b / $best_a" %.2f)" "≤ 1.5" "then filled in by the worker at $fill1 rows/s (a request each); $note1"

  say
  say "== 10. refresh(): queue $n stale answers, oldest first"
  q "UPDATE enrich.companies SET fetched_at = fetched_at - interval '31 days' WHERE domain LIKE 'ins-%'" "VACUUM ANALYZE enrich.companies" >/dev/null
  ledger_reset
  qt "SELECT enrich.refresh('company', '30 days', $n)" || fail "refresh"
  [ "$QT_OUT" = "$n" ] || fail "refresh queued '$QT_OUT', expected $n"
  local tr=$QT_SECS
  say "  refresh queued $QT_OUT answers in $(calc "$tr * 1000") ms ($(calc "$n / $tr") rows/s)"
  cpu_begin
  qt "SELECT enrich.wait('10 min')" || fail "waiting for the refresh"
  cpu_end
  read -r req charged <<<"$(ledger_get requests.leadlex charged.leadlex.wbk_test_key)"
  [ "$charged" = "$n" ] || fail "refresh: $charged credits, expected $n"
  say "  $req requests, $charged credits"
  say "  the worker refreshed them in $(calc "$QT_SECS" %.1f) s ($(calc "$n / $QT_SECS") req/s), and the auto_enrich table with them"
  row "refresh() queueing 100,000 stale answers" "$(calc "$tr * 1000") ms" "" "" "" "$(calc "$n / $tr") rows/s; refreshed by the worker at $(calc "$n / $QT_SECS") req/s"
}

# ---------------------------------------------------------------- rate
# Each rate figure starts from a fresh server (nothing learned yet).
fresh_server() {
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -m fast -w restart >/dev/null || fail "restarting the cluster"
}
# rate_case LABEL PATH KIND N LIMIT_RATE CONTROL: runs N items of KIND
# (company or lead) by PATH (worker, batch, sync8) against the emulator's
# rate limit CONTROL; prints time, requests and 429s; sets RC_SECS, RC_REQ, RC_429.
rate_case() {
  local label=$1 path=$2 kind=$3 n=$4 prov keys fn t0 t1 out i per
  prov=leadlex; [ "$kind" = lead ] && prov=slintel
  local tag="rate-$path-$5"
  if [ "$kind" = company ]; then keys="format('$tag-%s.com', g)"; else keys="format('linkedin.com/in/$tag-%s', g)"; fi
  fresh_server
  set_conc 16
  emu_ctl "{\"reset\": true, \"balance\": {\"wbk_test_key\": 1000000000000}, \"daily_quota\": {\"leadlex\": 1000000000000}, \"rate_limit\": $6}"
  t0=$(date +%s.%N)
  case $path in
    worker)
      q "SELECT count(enrich.enqueue_$kind($keys)) FROM generate_series(1, $n) g" >/dev/null &&
        out=$(q "SELECT enrich.wait('5 min')") && [ "$out" = t ] || fail "$label: the queue did not drain"
      out=$(q "SELECT count(*) FROM enrich.queue WHERE status = 'done' AND key LIKE '%$tag-%'")
      ;;
    batch)
      fn=enrich_companies; [ "$kind" = lead ] && fn=enrich_leads
      out=$(q "SELECT count(*) FILTER (WHERE status = 'fetched') FROM $fn(ARRAY(SELECT $keys FROM generate_series(1, $n) g))")
      ;;
    sync8)
      fn=enrich_company; [ "$kind" = lead ] && fn=enrich_lead
      per=$(( n / 8 ))
      for i in $(seq 0 7); do
        q "DO \$\$ BEGIN FOR g IN $(( i * per + 1 ))..$(( (i + 1) * per )) LOOP PERFORM $fn($keys); END LOOP; END \$\$" >/dev/null &
      done
      wait
      n=$(( per * 8 ))
      out=$(q "SELECT count(*) FROM enrich.${kind/company/companie}s WHERE $( [ "$kind" = company ] && echo domain || echo linkedin_url ) LIKE '%$tag-%'")
      ;;
  esac
  t1=$(date +%s.%N)
  [ "$out" = "$n" ] || fail "$label: $out of $n finished"
  RC_SECS=$(calc "$t1 - $t0" %.2f)
  read -r RC_REQ RC_429 <<<"$(ledger_get "requests.$prov" "by_status.$prov.429")"
}
bench_rate() {
  local spec label path kind n rate ctl goal_t goal_429 ideal
  say
  say "== 9. rate limits: the provider's limit found and kept (max_concurrency 16, 0 ms latency)"
  for path in ${BENCH_RATE_PATHS:-worker batch sync8}; do
    for spec in "company|200|20|{\"leadlex\": {\"per_second\": 20, \"window\": \"fixed\"}}|1.15|2|window of 20/s announced in X-RateLimit-* headers" \
                "company|500|25|{\"leadlex\": {\"per_second\": 25, \"retry_after\": true}}|1.25|5|25/s that only says 429 + Retry-After" \
                "lead|100|10|{\"slintel\": {\"per_second\": 10, \"max_concurrent\": 10}}|1.10|0|Slintel 10/s and 10 at once"; do
      IFS='|' read -r kind n rate ctl goal_t goal_429 label <<<"$spec"
      rate_case "$path: $label" "$path" "$kind" "$n" "$rate" "$ctl"
      ideal=$(calc "$n / $rate" %.1f)
      say "  $path, $label: $n in $RC_SECS s (the limit allows $ideal s: $(calc "$RC_SECS / $ideal" %.2f)x), $RC_429 of $RC_REQ requests answered 429 ($(calc "100 * $RC_429 / $RC_REQ" %.1f) %)"
      row "$path: $n × $label" "$RC_SECS s, $RC_429 × 429 of $RC_REQ" "$ideal s at the limit" "$(calc "$RC_SECS / $ideal" %.2f)" "≤ ${goal_t}x, 429s ≤ ${goal_429} %" ""
    done
  done
}

# ---------------------------------------------------------------- databases
# 10,000 items split over four databases (a worker each, started by the
# launcher) at 50 ms and max_concurrency 64, against the limit 64 / 50 ms
# and against the same 10,000 items in one database, measured just before.
bench_databases() {
  local d i t0 t1 secs rate one peak
  say
  say "== 12. four databases: 10,000 items split over four workers at 50 ms, max_concurrency 64 (limit 1,280/s)"
  set_conc 64; set_latency 50; ledger_reset
  drain onedb 10000
  one=$DR_RATE
  say "  one database: $one items/s"
  for d in 1 2 3 4; do
    q "SELECT 1 FROM pg_database WHERE datname = 'bench_db$d'" | grep -q 1 || q "CREATE DATABASE bench_db$d" >/dev/null
    "${PSQL[@]}" -d "bench_db$d" -c "CREATE EXTENSION IF NOT EXISTS enrich" >/dev/null || { fail "CREATE EXTENSION in bench_db$d"; return; }
  done
  for i in $(seq 1 100); do
    [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'enrich worker' AND datname LIKE 'bench_db%'")" = 4 ] && break
    sleep 0.1
  done
  ledger_reset
  # Timed as the one-database drain is: from the commit of the first
  # enqueue (the first database's worker starts on its items while the
  # others are enqueued) to the last item finished in any database, read
  # from the items' own timestamps; the wall time around the client's
  # statements (eight psql sessions, one after another) is shown beside it.
  local t0s t_first t_last last ndone
  cpu_begin
  t0=$(date +%s.%N)
  t_last=0
  for d in 1 2 3 4; do
    t0s=$("${PSQL[@]}" -d "bench_db$d" -c "SELECT extract(epoch FROM max(clock_timestamp()))
        FROM (SELECT enrich.enqueue_company(format('dbs$d-%s.com', g)) FROM generate_series(1, 2500) g) e") ||
      fail "enqueue in bench_db$d"
    [ "$d" = 1 ] && t_first=$t0s
  done
  for d in 1 2 3 4; do
    [ "$("${PSQL[@]}" -d "bench_db$d" -c "SELECT enrich.wait('5 min')")" = t ] || fail "bench_db$d did not drain"
  done
  t1=$(date +%s.%N)
  cpu_end
  for d in 1 2 3 4; do
    read -r ndone last <<<"$("${PSQL[@]}" -F ' ' -d "bench_db$d" -c "SELECT count(*) FILTER (WHERE status = 'done'), extract(epoch FROM max(finished_at)) FROM enrich.queue")"
    [ "$ndone" = 2500 ] || fail "bench_db$d: not every item done"
    say "  bench_db$d: last item finished $(calc "$last - $t_first" %.2f) s after the first enqueue committed"
    [ "$(calc "$last > $t_last" %d)" = 1 ] && t_last=$last
  done
  secs=$(calc "$t_last - $t_first" %.3f)
  rate=$(calc "10000 / $secs")
  peak=$(ledger_get peak_concurrency.leadlex)
  say "  four databases: $rate items/s ($secs s from the first enqueue's commit to the last item; $(calc "$t1 - $t0" %.2f) s of wall time around the client's eight statements), $(calc "$rate / 1280" %.2f) of the limit, $(calc "$rate / $one" %.2f) of one database; emulator peak concurrency $peak"
  row "four databases, 10,000 items at 50 ms, max_concurrency 64" "$rate items/s" "1,280/s limit; one database $one/s" "$(calc "$rate / 1280" %.2f)" "≥ 0.9" "$(calc "$rate / $one" %.2f) of one database; peak concurrency $peak; $CPU_NOTE"
}

# ---------------------------------------------------------------- retention
# RETENTION_ITEMS items through the queue in ten chunks, with
# enrich.queue_retention off (-1) and then at RETENTION_SECS: the queue's
# table and index sizes after each chunk, and the drain rate of each run.
bench_retention() {
  local n=${RETENTION_ITEMS:-1000000} keep=${RETENTION_SECS:-60} step run setting i a b secs total sizes per_index
  local rate_off=0 rate_on=0 size_off= size_on= note_on=
  step=$((n / 10))
  say
  say "== 11. queue retention: $n items through the queue in chunks of $step, retention off, then ${keep} s (autovacuum_naptime 5 s)"
  set_latency 0
  set_conc 256
  # At thousands of items a second the space of deleted rows, and of the
  # index pages they empty, is used again only after autovacuum has been by:
  # its default minute lets a million items' worth of pages go by unused.
  # A DBA with this rate vacuums more often; both runs do.
  q "ALTER SYSTEM SET autovacuum_naptime = '5s'" "SELECT pg_reload_conf()" >/dev/null
  for run in off on; do
    [ $run = off ] && setting=-1 || setting=$keep
    # each run from the same state: an empty queue and cache (else the second
    # run writes into the first's million cached answers), no checkpoint due
    q "TRUNCATE enrich.queue, enrich.companies" "CHECKPOINT" \
      "ALTER SYSTEM SET enrich.queue_retention = $setting" "SELECT pg_reload_conf()" >/dev/null
    sleep 0.5
    total=0
    [ $run = on ] && cpu_begin
    for i in $(seq 1 10); do
      a=$(( (i - 1) * step + 1 )); b=$(( i * step ))
      q "SELECT count(enrich.enqueue_company(format('ret-%s-%s.com', '$run', g))) FROM generate_series($a, $b) g" >/dev/null ||
        fail "retention $run: enqueue"
      qt "SELECT enrich.wait('30 min')" || fail "retention $run: wait"
      [ "$QT_OUT" = t ] || fail "retention $run: enrich.wait() timed out"
      total=$(calc "$total + $QT_SECS" %.3f)
      sizes=$(q "SELECT pg_size_pretty(pg_relation_size('enrich.queue')) || ' table, '
                     || pg_size_pretty(pg_indexes_size('enrich.queue')) || ' indexes, '
                     || count(*) || ' rows' FROM enrich.queue")
      per_index=$(q "SELECT string_agg(c.relname || ' ' || pg_size_pretty(pg_relation_size(c.oid)), ', ' ORDER BY c.relname)
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'enrich.queue'::regclass")
      say "    $per_index"
      say "  retention $run, $b items: $sizes; drained at $(calc "$b / $total") items/s so far"
    done
    [ $run = on ] && { cpu_end; note_on=$CPU_NOTE; }
    if [ $run = off ]; then rate_off=$(calc "$n / $total"); size_off=$sizes
    else rate_on=$(calc "$n / $total"); size_on=$sizes; fi
  done
  say "  drain rate: retention ${keep} s $rate_on items/s, off $rate_off items/s, ratio $(calc "$rate_on / $rate_off" %.2f)"
  row "worker, $n items, \`queue_retention\` ${keep} s" "$rate_on items/s; queue at the end: $size_on" "$rate_off items/s, queue $size_off with retention off" "$(calc "$rate_on / $rate_off" %.2f)" "sizes bounded, ≥ 0.9" "$note_on"
  q "ALTER SYSTEM RESET enrich.queue_retention" "ALTER SYSTEM RESET autovacuum_naptime" "SELECT pg_reload_conf()" >/dev/null
}

bench_ledger() {
  local n=${LEDGER_ITEMS:-100000} run rounds=${LEDGER_ROUNDS:-4} r on=0 off=0 bytes rows
  say
  say "== 12. the ledger: the worker draining $n items at 0 ms with enrich.ledger, and with it set aside, $rounds rounds each"
  set_latency 0
  set_conc 256
  # a first drain warms the server, the worker and the emulator up
  q "TRUNCATE enrich.queue, enrich.companies, enrich.ledger" >/dev/null
  drain ledwarm "$n"
  for r in $(seq 1 $rounds); do
    # alternating which goes first
    for run in $( ((r % 2)) && echo on off || echo off on); do
      # each run from the same state: empty queue, cache and ledger, after a
      # checkpoint, and an emulator that has forgotten the charges before
      # (its records of them grow with every run and slowed later rounds)
      q "TRUNCATE enrich.queue, enrich.companies, enrich.ledger" "CHECKPOINT" >/dev/null
      ledger_reset
      # without a table named enrich.ledger no charge is recorded (as under 0.2.0's SQL)
      [ $run = off ] && q "ALTER TABLE enrich.ledger RENAME TO ledger_set_aside" >/dev/null
      drain "led$r$run" "$n"
      [ $run = off ] && q "ALTER TABLE enrich.ledger_set_aside RENAME TO ledger" >/dev/null
      say "  round $r, ledger $run: $DR_RATE items/s"
      if [ $run = on ]; then
        on=$(calc "$on + $DR_RATE / $rounds")
        rows=$(q "SELECT count(*) FROM enrich.ledger")
        [ "$rows" = "$n" ] || fail "ledger: $rows rows for $n charges"
        bytes=$(q "SELECT pg_total_relation_size('enrich.ledger') / count(*) FROM enrich.ledger")
      else
        off=$(calc "$off + $DR_RATE / $rounds")
      fi
    done
  done
  say "  drain: ledger on $on items/s, set aside $off items/s, ratio $(calc "$on / $off" %.2f); $bytes bytes per charge (table and indexes)"
  row "worker, $n items at 0 ms, with \`enrich.ledger\`" "$on items/s; $bytes bytes per charge" "$off items/s without the ledger" "$(calc "$on / $off" %.2f)" "≥ 0.95" "mean of $rounds alternating rounds"
}

bench_analyze() {
  local n=${ANALYZE_ITEMS:-100000} run t0 t1 plain mid stats
  say
  say "== 13. a bulk enqueue of $n items with an ANALYZE of the queue in the middle of it (as autovacuum's may be), against one without"
  set_latency 0
  set_conc 256
  for run in plain mid; do
    q "TRUNCATE enrich.queue, enrich.companies" "CHECKPOINT" >/dev/null
    t0=$(date +%s.%N)
    if [ $run = mid ]; then
      # the enqueue stays uncommitted for a second, and the ANALYZE sees its pages
      "${PSQL[@]}" -c "BEGIN" -c "SELECT count(enrich.enqueue_company(format('an$run-%s.com', g))) FROM generate_series(1, $n) g" \
        -c "SELECT pg_sleep(1)" -c "COMMIT" >/dev/null &
      sleep 0.5
      until [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(1)%'")" = 1 ]; do sleep 0.05; done
      q "ANALYZE enrich.queue" >/dev/null
      wait
      stats=$(q "SELECT 'relpages ' || relpages || ', reltuples ' || reltuples FROM pg_class WHERE oid = 'enrich.queue'::regclass")
    else
      q "SELECT count(enrich.enqueue_company(format('an$run-%s.com', g))) FROM generate_series(1, $n) g" >/dev/null
    fi
    q "SELECT enrich.wait('10 min')" >/dev/null || fail "analyze $run: wait"
    t1=$(date +%s.%N)
    [ "$(q "SELECT count(*) FROM enrich.queue WHERE status = 'done' AND key LIKE 'an$run-%'")" = "$n" ] || fail "analyze $run: not all done"
    if [ $run = plain ]; then plain=$(calc "$n / ($t1 - $t0)"); else mid=$(calc "$n / ($t1 - $t0)"); fi
  done
  say "  enqueue and drain: $mid items/s with the ANALYZE in the middle (then $stats), $plain items/s without, ratio $(calc "$mid / $plain" %.2f)"
  row "enqueue and drain of $n items at 0 ms, an \`ANALYZE\` of the queue in the middle of the enqueue" "$mid items/s" "$plain items/s without the ANALYZE" "$(calc "$mid / $plain" %.2f)" "close to 1" "the ANALYZE leaves $stats"
}

emu_setup
want emu && bench_emu
want sync && bench_sync
want syncmiss && bench_syncmiss
want worker && bench_worker
want batch && bench_batch
want auto && bench_auto
want rate && bench_rate
want retention && bench_retention
want databases && bench_databases
want ledger && bench_ledger
want analyze && bench_analyze

# ---------------------------------------------------------------- report
TABLE=$(
  echo "| figure | measured | baseline / limit | ratio | goal | notes |"
  echo "| --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${ROWS[@]}"
)
HEAD="enrich benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'); $NCPU × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), PostgreSQL $(pg_config --version | awk '{print $2}'), libcurl $(pkg-config --modversion libcurl 2>/dev/null || echo '?'), node $(node --version); commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes'); sections: $SECTIONS; $(( $(date +%s) - T_START )) s."
say
say "== summary"
say
say "$HEAD"
say
say "$TABLE"
if [ "$SECTIONS" = "$ALL_SECTIONS" ]; then
  {
    echo "# Benchmark results"
    echo
    echo "Written by \`test/bench/run.sh\` (a full run). $HEAD"
    echo "Emulator and cluster on the same machine, over loopback HTTPS. CPU: % of one core during the figure"
    echo "(worker / other PostgreSQL processes / emulator / everything else, clients included)."
    echo
    echo "$TABLE"
    if [ ${#FAILURES[@]} -gt 0 ]; then
      echo; echo "Functional failures in this run:"; printf -- '- %s\n' "${FAILURES[@]}"
    fi
  } >"$BENCH/results.md"
  say
  say "written to test/bench/results.md"
fi
if [ ${#FAILURES[@]} -gt 0 ]; then
  say
  say "${#FAILURES[@]} functional failure(s):"
  printf '  %s\n' "${FAILURES[@]}"
  exit 1
fi
exit 0
