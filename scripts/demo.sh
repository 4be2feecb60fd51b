#!/usr/bin/env bash
# Installs what is missing, builds and installs enrich, starts a throwaway
# cluster (run by the user postgres) with the worker preloaded, and enriches
# acme.com and the seed LinkedIn profile.  Against the bundled provider
# emulator unless ENRICH_LEADLEX_API_KEY / ENRICH_SLINTEL_API_KEY are set,
# in which case the real providers are called with those keys.
#
#   bash scripts/demo.sh          run the demo; the cluster stays up for you
#   bash scripts/demo.sh stop     stop the demo cluster and emulator
set -euo pipefail
. "$(dirname "$0")/lib.sh"

STATE=/tmp/enrich-demo
if [ "${1:-}" = "stop" ]; then
  stop_cluster "$STATE"; stop_emulator "$STATE"; rm -rf "$STATE"
  echo "demo stopped"; exit 0
fi

bash "$ROOT/scripts/deps.sh"
build_install

if [ -d "$STATE" ]; then stop_cluster "$STATE"; stop_emulator "$STATE"; rm -rf "$STATE"; fi
mkdir -p "$STATE"; chmod 755 "$STATE"; [ "$(id -u)" -eq 0 ] && chown "$RUN_AS" "$STATE"

real=0
if [ -n "${ENRICH_LEADLEX_API_KEY:-}${ENRICH_SLINTEL_API_KEY:-}" ]; then real=1; fi
if [ $real -eq 0 ]; then
  start_emulator "$STATE"
else
  EMU_HTTPS=0 EMU_CA=
fi
start_cluster "$STATE"
if [ $real -eq 1 ]; then
  # real providers: default URLs and the system CA store
  cat >>"$STATE/data/postgresql.auto.conf" <<CONF
enrich.leadlex_url = 'https://data.leadlex.com/functions/v1/api-gateway'
enrich.slintel_url = 'https://apiv2.slintel.com'
enrich.ca_file = ''
CONF
  as_pg "$PG_BIN/pg_ctl" -D "$STATE/data" reload >/dev/null
fi

PSQL=(psql -X -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres)
ledger() { [ $real -eq 0 ] && "$ROOT/test/emu" ledger | perl -MJSON::PP -e 'local $/; my $l = decode_json(<>); printf "provider ledger: %d request(s), %d credit(s) charged\n", ($l->{requests}{leadlex}//0)+($l->{requests}{slintel}//0), ($l->{charged}{leadlex}{wbk_test_key}//0)+($l->{charged}{slintel}{sl_test_key}//0)'; true; }

echo
echo "== CREATE EXTENSION enrich"
"${PSQL[@]}" -q -c "CREATE EXTENSION IF NOT EXISTS enrich;"
echo "== first call: a request, one credit"
"${PSQL[@]}" -c "SELECT enrich_company('acme.com')->>'name' AS name, enrich_company('acme.com')->>'industry' AS industry;"
ledger
echo "== the same company again, written another way: from the cache, no credit"
"${PSQL[@]}" -c "SELECT enrich_company('https://WWW.Acme.com/about')->>'name' AS name;"
ledger
echo "== a lead from its LinkedIn URL"
"${PSQL[@]}" -c "SELECT enrich_lead('http://www.linkedin.com/in/deepak-anchala-0043707')->>'name' AS name, enrich_lead('linkedin.com/in/deepak-anchala-0043707')->>'lead_title' AS title;"
ledger
echo "== the background worker: queue 100 companies, wait for them"
"${PSQL[@]}" -c "SELECT count(enrich.enqueue_company(format('demo-%s.com', g))) AS queued FROM generate_series(1, 100) g;" \
             -c "SELECT enrich.wait('1 min') AS all_done;" \
             -c "SELECT status, count(*) FROM enrich.queue GROUP BY status;"
ledger
echo "== what the cache holds"
"${PSQL[@]}" -c "SELECT domain, result->>'name' AS name, source, confidence, fetched_at FROM enrich.companies ORDER BY fetched_at LIMIT 3;"
echo
echo "The demo cluster is running. Connect with:"
echo "  psql -h $PGHOST -p $PGPORT -U postgres"
echo "Stop it with: bash scripts/demo.sh stop"
