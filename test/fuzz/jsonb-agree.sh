#!/usr/bin/env bash
# Holds the response check of src/response.c against the server's jsonb_in
# on every file below the given directories (the seeds and the corpus the
# fuzzer left in build/):
#   - a body the check passes must be one jsonb_in takes (else the worker
#     would meet an ERROR on an answer it paid for);
#   - a body jsonb_in takes must pass, unless refused for nesting or size,
#     where the check is stricter on purpose.
# Needs test/fuzz built (run.sh) and a running server reached with the
# usual PG* variables as a superuser (the server reads the files with
# pg_read_binary_file, so they must be readable by its user).
#
#   bash test/fuzz/jsonb-agree.sh [DIR...]   default: build/seeds/response build/corpus/fuzz_response
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -gt 0 ] || set -- "$HERE/build/seeds/response" "$HERE/build/corpus/fuzz_response"
verdicts=$(mktemp)
trap 'rm -f "$verdicts"' EXIT
chmod 644 "$verdicts"
for d in "$@"; do [ -d "$d" ] && find "$(cd "$d" && pwd)" -type f -print0; done |
  xargs -0 -r "$HERE/build/response_verdict" >"$verdicts"

psql -X -q -v ON_ERROR_STOP=1 -At <<SQL
CREATE TEMP TABLE verdicts (path text, verdict text);
\copy verdicts FROM '$verdicts' WITH (FORMAT csv, DELIMITER E'\t', QUOTE E'\b')
CREATE FUNCTION pg_temp.jsonb_verdict(path text) RETURNS text
LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM convert_from(pg_read_binary_file(path), 'UTF8')::jsonb;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
\$\$;
CREATE TEMP TABLE both_verdicts AS
    SELECT path, verdict, pg_temp.jsonb_verdict(path) AS server FROM verdicts;
SELECT format('jsonb agreement: %s bodies, %s taken by both, %s refused by both, %s refused by the check only (nesting or size)',
              count(*), count(*) FILTER (WHERE verdict = 'ok' AND server = 'ok'),
              count(*) FILTER (WHERE verdict <> 'ok' AND server <> 'ok'),
              count(*) FILTER (WHERE verdict <> 'ok' AND server = 'ok'))
  FROM both_verdicts;
SELECT format('DISAGREE: %s: check says "%s", jsonb_in says "%s"', path, verdict, left(server, 200))
  FROM both_verdicts
 WHERE (verdict = 'ok') <> (server = 'ok')
   AND NOT (server = 'ok' AND verdict IN ('the response nests JSON deeper than allowed',
                                          'the response is too large for jsonb'))
 ORDER BY path;
DO \$\$
BEGIN
    IF EXISTS (SELECT FROM both_verdicts
                WHERE (verdict = 'ok') <> (server = 'ok')
                  AND NOT (server = 'ok' AND verdict IN ('the response nests JSON deeper than allowed',
                                                         'the response is too large for jsonb'))) THEN
        RAISE EXCEPTION 'the response check and jsonb_in disagree';
    END IF;
END
\$\$;
SQL
